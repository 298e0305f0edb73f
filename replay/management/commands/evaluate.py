import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from replay.evaluation import Report, evaluate_path, scenario_paths
from replay.server import serve_in_process, server_url


def _entity(e: dict | None) -> str:
    if not e:
        return "—"
    return (
        f"{e['kind']} {e['namespace']}/{e['name']}"
        if e.get("namespace")
        else f"{e['kind']} {e['name']}"
    )


class Command(BaseCommand):
    help = (
        "Replay scenarios through the real pipeline (one world at a time), score the analysis against "
        "each scenario's `expected`, print a table and totals. --json writes them; --fail-under F exits 1 "
        "when top-1 or action accuracy is below F."
    )
    requires_migrations_checks = True

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="scenario files or folders of them")
        parser.add_argument("--json", dest="json_file", help="also write the results as JSON here")
        parser.add_argument(
            "--fail-under", type=float, help="exit 1 when top-1 or action accuracy < F"
        )
        parser.add_argument(
            "--url", help="a running Vigil to feed (default: serve one in this process)"
        )
        parser.add_argument("--no-metrics", action="store_true", help="do not start Prometheus")

    def handle(self, *args, paths, json_file, fail_under, url, no_metrics, **options):
        files = scenario_paths(paths)
        if not files:
            raise CommandError("no scenario files found")
        server = None if url else serve_in_process()
        base_url = url or server_url(server)
        report = Report()
        try:
            for path in files:
                result = evaluate_path(path, base_url, with_metrics=not no_metrics)
                report.results.append(result)
                self._row(result)
        finally:
            if server:
                server.shutdown()
                server.server_close()
        totals = report.totals()
        self.stdout.write(
            f"\nTOTAL {totals['scenarios']} scenarios: top-1 {totals['top1']:.0%}, "
            f"top-3 {totals['top3']:.0%}, action {totals['action']:.0%}; prompt tokens max "
            f"{totals['max_prompt_tokens']:,} (budget {settings.VIGIL_LLM_INPUT_TOKENS:,}), LLM changed "
            f"the top hypothesis in {totals['llm_top_changed']} of {totals['llm_narrated']} narrated"
        )
        if json_file:
            Path(json_file).write_text(json.dumps(report.as_json(), indent=2))
        if fail_under is not None and (
            totals["top1"] < fail_under or totals["action"] < fail_under
        ):
            raise CommandError(
                f"below --fail-under {fail_under}: top-1 {totals['top1']:.2f}, action {totals['action']:.2f}"
            )

    def _row(self, r) -> None:
        exp, top = r.expected, r.top or {}
        mark = "✓" if r.top1 else "✗"
        self.stdout.write(f"\n{mark} {r.name}" + (f"  ERROR: {r.error}" if r.error else ""))
        self.stdout.write(
            f"    expected  {exp.get('category')} · {_entity(exp.get('entity'))} → {exp.get('action')} {_entity(exp.get('target'))}"
        )
        self.stdout.write(
            f"    got       {top.get('category', '—')} · {_entity(top.get('entity'))} → "
            f"{(r.first_action or {}).get('action', '—')} {_entity((r.first_action or {}).get('target'))}"
        )
        self.stdout.write(
            f"    rank {r.expected_rank or '—'}  action {'match' if r.action_match else 'miss'}  "
            f"{r.seconds if r.seconds is not None else '—'}s  prompt {r.tokens:,} tokens "
            f"(budget {settings.VIGIL_LLM_INPUT_TOKENS:,})  {self._llm(r)}"
        )

    @staticmethod
    def _llm(r) -> str:
        if r.llm == "off":
            return "llm off"
        if r.llm == "ok":
            return "llm ok, top " + ("CHANGED" if r.llm_top_changed else "kept")
        return f"llm {r.llm}: {r.llm_error}"
