"""Log lines into signatures: what differs only in ids and numbers groups; different errors don't."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from collectors.signatures import LogLine, classify, group, normalise, parse_timestamped, summarise

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def lines(*texts: str, step: int = 1) -> list[LogLine]:
    return [LogLine(T0 + timedelta(seconds=i * step), t) for i, t in enumerate(texts)]


def by_signature(texts: list[LogLine]) -> dict[str, dict]:
    return {s.signature: s.as_dict() for s in group(texts)}


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "2026-11-23T10:01:02.123Z request 3f2a9c1e-7b4d-4e8f-9a0b-1c2d3e4f5a6b failed after 3 retries",
            "<ts> request <uuid> failed after <n> retries",
        ),
        (
            "connect to 10.96.88.213:6379 refused (conn 0x7f3a2c1b8e40)",
            "connect to <ip> refused (conn <hex>)",
        ),
        (
            "pod chat-api-6f4d9b8c7d-4kq2v evicted from rs chat-api-7c9f8d6b54",
            "pod chat-api-<pod> evicted from rs chat-api-<hash>",
        ),
        ("KeyError: 'VECTOR_DB_URL'", "KeyError: <str>"),
        ('open "/data/shard-0042.bin": no such file', "open <str>: no such file"),
        (
            "image sha256:4f1c6a0e2b9d7c5a3e1f8b6d4c2a0e9f was pulled",
            "image sha<n>:<hex> was pulled",
        ),
        ("token org-7QmVx2LcA9pRtE4sZ8 expired", "token org-<id> expired"),
        ("Tried to allocate 2.37 GiB on GPU 0", "Tried to allocate <size> on GPU <n>"),
    ],
)
def test_normalise_strips_what_varies(raw, expected):
    assert normalise(raw) == expected


def test_normalise_keeps_the_codes_that_name_the_problem():
    assert normalise("NVRM: Xid (PCI:0000:c9:00): 79, pid=1234, GPU has fallen off the bus.") == (
        "NVRM: Xid 79, pid=<n>, GPU has fallen off the bus."
    )
    assert normalise("ConnectionRefusedError: [Errno 111] Connect call failed") == (
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )
    assert normalise("worker exited with exit code 137 after 12s") == (
        "worker exited with exit code 137 after <n>s"
    )


def test_kubelet_timestamps_are_parsed_to_the_microsecond():
    parsed = parse_timestamped(
        "2026-11-23T10:00:01.123456789Z first line\nno stamp here\n"
        "2026-11-23T10:00:02Z   indented line\n"
    )
    assert parsed[0] == LogLine(datetime(2026, 11, 23, 10, 0, 1, 123456, tzinfo=UTC), "first line")
    assert parsed[1] == LogLine(None, "no stamp here")
    assert parsed[2].text == "  indented line"


# --- Python tracebacks ---------------------------------------------------------------------------

TRACEBACK = [
    "ERROR:    Exception in ASGI application",
    "Traceback (most recent call last):",
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/entrypoints/openai/serving_chat.py", line 561, in chat_completion_full_generator',
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/transformers_utils/detokenizer.py", line 290, in detokenize_incrementally',
    "    new_text = tokenizer.convert_tokens_to_string(output_tokens[prefix_offset:read_offset])",
    "TypeError: sequence item 3: expected str instance, NoneType found",
]


def test_a_traceback_is_one_signature_named_by_its_exception_and_repeats_group():
    second = [*TRACEBACK[:-1], "TypeError: sequence item 0: expected str instance, NoneType found"]
    standalone = "TypeError: sequence item 7: expected str instance, NoneType found"
    signatures = by_signature(lines(*TRACEBACK, *second, standalone))
    typeerror = signatures["TypeError: sequence item <n>: expected str instance, NoneType found"]
    assert typeerror["count"] == 3
    assert typeerror["level"] == "error"
    assert typeerror["category"] == "python-exception"
    assert typeerror["first"] == "2026-11-23T10:00:01Z"  # the Traceback line
    assert typeerror["last"] == "2026-11-23T10:00:12Z"
    assert typeerror["examples"][0].startswith("Traceback (most recent call last):")
    assert "detokenizer.py" in typeerror["examples"][0]
    assert len(typeerror["examples"]) <= 3
    assert signatures["Exception in ASGI application"]["count"] == 2
    # the frames are part of the record, never signatures of their own
    assert not any(s.startswith(("File", "new_text")) for s in signatures)
    assert len(signatures) == 2


def test_different_exceptions_do_not_group():
    signatures = by_signature(
        lines(
            "Traceback (most recent call last):",
            '  File "/app/worker/settings.py", line 31, in <module>',
            "KeyError: 'VECTOR_DB_URL'",
            "Traceback (most recent call last):",
            '  File "/app/worker/db.py", line 12, in connect',
            "ValueError: invalid literal for int() with base 10: 'abc'",
        )
    )
    assert set(signatures) == {
        "KeyError: <str>",
        "ValueError: invalid literal for int() with base <n>: <str>",
    }
    assert signatures["KeyError: <str>"]["examples"][0].endswith("KeyError: 'VECTOR_DB_URL'")


def test_a_chained_traceback_is_named_by_its_last_exception():
    signatures = by_signature(
        lines(
            "Traceback (most recent call last):",
            '  File "/usr/local/lib/python3.11/site-packages/redis/asyncio/connection.py", line 276, in connect',
            "ConnectionRefusedError: [Errno 111] Connect call failed ('10.96.88.213', 6379)",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "/app/semantic_api/routes/search.py", line 57, in search',
            "redis.exceptions.ConnectionError: Error 111 connecting to cache-redis.search.svc:6379. Connection refused.",
            'INFO:     10.42.0.31:41288 - "GET /healthz HTTP/1.1" 200 OK',
        )
    )
    assert list(signatures) == [
        "redis.exceptions.ConnectionError: Error <n> connecting to cache-redis.search.svc:<n>. Connection refused."
    ]
    example = signatures[next(iter(signatures))]["examples"][0]
    assert "During handling" in example and "ConnectionRefusedError" in example


def test_a_traceback_logged_with_a_prefix_on_every_line_is_still_one_record():
    prefixed = [
        "ERROR 11-23 10:01:02 engine.py:135] Traceback (most recent call last):",
        'ERROR 11-23 10:01:02 engine.py:135]   File "/usr/local/lib/python3.12/dist-packages/vllm/worker/model_runner.py", line 1654, in execute_model',
        "ERROR 11-23 10:01:02 engine.py:135]     x = x + self.mlp(self.norm2(x))",
        "ERROR 11-23 10:01:02 engine.py:135] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.37 GiB. GPU 0 has a total capacity of 44.42 GiB of which 157.75 MiB is free.",
    ]
    other = prefixed[3].replace("2.37", "3.12").replace("157.75", "61.75")
    signatures = group(lines(*prefixed, other))
    assert len(signatures) == 1
    assert signatures[0].count == 2
    assert signatures[0].category == "cuda-oom"
    assert signatures[0].signature.startswith("torch.OutOfMemoryError: CUDA out of memory.")


# --- GPU, NCCL, Go -------------------------------------------------------------------------------


def test_cuda_oom_lines_differing_in_sizes_group():
    signatures = group(
        lines(
            "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total capacity; 77.91 GiB already allocated)",
            "RuntimeError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 3; 79.15 GiB total capacity; 76.02 GiB already allocated)",
        )
    )
    assert [(s.category, s.level, s.count) for s in signatures] == [("cuda-oom", "error", 2)]


def test_nccl_errors_group_by_shape_and_stay_apart_from_other_errors():
    signatures = by_signature(
        lines(
            "[rank3]:[E1123 10:00:01.123456 ProcessGroupNCCL.cpp:616] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=4812, OpType=ALLREDUCE, NumelIn=2097152, Timeout(ms)=600000) ran for 600041 milliseconds before timing out.",
            "[rank5]:[E1123 10:00:01.223456 ProcessGroupNCCL.cpp:616] [Rank 5] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=4813, OpType=ALLREDUCE, NumelIn=2097152, Timeout(ms)=600000) ran for 600102 milliseconds before timing out.",
            "gpu-node-3:412:988 [1] NCCL WARN NET/IB : Got completion from peer 10.0.8.4<51234> with error 12, opcode 0, len 0, vendor err 129",
            "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5",
        )
    )
    assert all(s["category"] == "nccl" for s in signatures.values())
    watchdog = [s for s in signatures.values() if "Watchdog" in s["signature"]]
    assert len(watchdog) == 1 and watchdog[0]["count"] == 2
    assert len(signatures) == 3


def test_xid_lines_group_by_code():
    signatures = by_signature(
        lines(
            "kernel: NVRM: Xid (PCI:0000:c9:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
            "kernel: NVRM: Xid (PCI:0000:4a:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
            "kernel: NVRM: Xid (PCI:0000:4a:00): 48, pid=2231, name=python3, An uncorrectable double bit error (DBE) has been detected on GPU.",
            "pynvml.NVMLError_GpuIsLost: GPU is lost",
        )
    )
    xid79 = [s for s in signatures.values() if "Xid 79" in s["signature"]]
    xid48 = [s for s in signatures.values() if "Xid 48" in s["signature"]]
    assert len(xid79) == 1 and xid79[0]["count"] == 2 and xid79[0]["level"] == "fatal"
    assert len(xid48) == 1
    assert signatures["pynvml.NVMLError_GpuIsLost: GPU is lost"]["category"] == "gpu-fault"


GO_PANIC = [
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x1a2b3c4]",
    "",
    "goroutine 42 [running]:",
    "main.(*Router).route(0xc000124000, {0x1c3d2e0, 0xc0003a2000})",
    "\t/src/router/router.go:88 +0x1d4",
    "net/http.HandlerFunc.ServeHTTP(0xc0001b6000?, {0x1c3d2e0?, 0xc0003a2000?}, 0x0?)",
    "\t/usr/local/go/src/net/http/server.go:2171 +0x29",
    "created by net/http.(*Server).Serve in goroutine 1",
    "\t/usr/local/go/src/net/http/server.go:3285 +0x4b4",
]


def test_a_go_panic_and_its_goroutine_dump_are_one_fatal_record():
    second = [line.replace("0xc000124000", "0xc000555000").replace("42", "77") for line in GO_PANIC]
    signatures = group(lines(*GO_PANIC, *second, '{"level":"info","msg":"restarted"}'))
    assert len(signatures) == 1
    panic = signatures[0]
    assert (
        panic.signature == "panic: runtime error: invalid memory address or nil pointer dereference"
    )
    assert (panic.level, panic.category, panic.count) == ("fatal", "go-panic", 2)
    assert "router.go:88" in panic.examples[0]


# --- access lines and structured logs ------------------------------------------------------------


def test_http_5xx_access_lines_group_by_status_method_and_path():
    signatures = by_signature(
        lines(
            'INFO:     10.42.0.31:40822 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.42.0.77:41907 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.42.0.31:41908 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
            'INFO:     10.42.0.31:41909 - "GET /v1/models HTTP/1.1" 404 Not Found',
            '10.0.0.12 - - [23/Nov/2026:10:00:01 +0000] "GET /api/orders/81723?x=1 HTTP/1.1" 502 157 "-" "curl/8.5.0"',
            '10.0.0.13 - - [23/Nov/2026:10:00:09 +0000] "GET /api/orders/99120 HTTP/1.1" 502 157 "-" "curl/8.5.0"',
            'INFO:     10.42.0.31:52118 - "POST /v1/ask HTTP/1.1" 503 Service Unavailable',
            'INFO:httpx:HTTP Request: POST http://llm-egress:8080/v1/chat/completions "HTTP/1.1 429 Too Many Requests"',
        )
    )
    assert signatures["HTTP 500 POST /v1/chat/completions"]["count"] == 2
    assert signatures["HTTP 500 POST /v1/chat/completions"]["category"] == "http-5xx"
    assert signatures["HTTP 502 GET /api/orders/<n>"]["count"] == 2
    assert signatures["HTTP 503 POST /v1/ask"]["count"] == 1
    upstream = signatures["HTTP 429 from upstream POST http://llm-egress:<n>/v1/chat/completions"]
    assert (upstream["level"], upstream["category"]) == ("warning", "http-429")
    assert len(signatures) == 4  # the 200 and the 404 are not problems


def test_json_logs_group_on_message_and_error_and_use_their_level():
    signatures = by_signature(
        lines(
            '{"ts":"2026-11-23T10:00:01Z","level":"error","msg":"query failed","error":"pq: connection reset by peer","request_id":"0e8d2b4f-6a1c-4f3e-9b7d-5c2a8e0f1d3b"}',
            '{"ts":"2026-11-23T10:00:02Z","level":"error","msg":"query failed","error":"pq: connection reset by peer","request_id":"6c1f0e2a-9b7d-4c3e-8a5f-1d2e3f4a5b6c"}',
            '{"ts":"2026-11-23T10:00:03Z","level":"warn","msg":"slow query","duration_ms":5120}',
            '{"ts":"2026-11-23T10:00:04Z","level":"info","msg":"request","status":200,"duration_ms":84}',
            '{"authority":"chat-lite:8000","method":"POST","path":"/v1/chat/completions","response_code":503,"response_flags":"UC","x_request_id":"9a3c5e7f-1b2d-4e6a-8c0f-3d5b7a9e1c2f"}',
            'time="2026-11-23T10:00:05Z" level=error msg="failed to sync" err="context deadline exceeded"',
        )
    )
    assert signatures["query failed error=pq: connection reset by peer"]["count"] == 2
    assert signatures["slow query"]["level"] == "warning"
    assert signatures["HTTP 503 POST /v1/chat/completions UC"]["category"] == "http-5xx"
    assert signatures["failed to sync error=context deadline exceeded"]["level"] == "error"
    assert len(signatures) == 4


def test_levels_come_from_the_line_and_info_is_not_a_problem():
    assert classify("INFO metrics.py:351] Avg prompt throughput: 2210.4 tokens/s") is None
    assert classify("INFO:     Application startup complete.") is None
    assert classify("I1123 10:00:01.000000       1 reflector.go:359] Caches populated") is None
    klog = classify(
        "E1123 10:00:01.123456       1 reflector.go:138] failed to list *v1.Pod: Unauthorized"
    )
    assert klog is not None and klog.level == "error"
    critical = classify(
        "CRITICAL launcher.py:99] MQLLMEngine is already dead, terminating server process"
    )
    assert critical is not None and critical.level == "fatal"
    warning = classify(
        "WARNING scheduler.py:1089] Sequence group chatcmpl-2a7e5d9c1b3f4e60a8d7c6b5a4f3e2d1 is preempted"
    )
    assert warning is not None and warning.level == "warning"
    assert classify("Segmentation fault (core dumped)").level == "fatal"


def test_signatures_are_ordered_by_severity_then_count_and_capped():
    texts = [f"WARNING deprecated option number {i}x" for i in range(5)]
    texts += ["ERROR backend unavailable"] * 2 + ["CRITICAL out of disk"]
    texts += [f"ERROR distinct failure kind{chr(97 + i)}" for i in range(30)]
    signatures, dropped = summarise(lines(*texts), limit=3)
    assert [s["signature"] for s in signatures] == [
        "out of disk",
        "backend unavailable",
        "distinct failure kinda",
    ]
    assert dropped == 30  # 1 warning shape + 29 other errors left out


def test_examples_are_distinct_and_at_most_three():
    texts = [f"ERROR timeout talking to 10.0.0.{i}" for i in range(10)]
    [signature] = group(lines(*texts, "ERROR timeout talking to 10.0.0.0"))
    assert signature.count == 11
    assert signature.examples == [  # as written, not normalised
        "ERROR timeout talking to 10.0.0.0",
        "ERROR timeout talking to 10.0.0.1",
        "ERROR timeout talking to 10.0.0.2",
    ]


def test_a_large_log_is_grouped_quickly():
    texts = []
    for i in range(1000):
        texts += TRACEBACK
        texts.append(
            f'INFO:     10.42.0.{i % 250}:4{i:04d} - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error'
        )
        texts.append(
            f"INFO metrics.py:351] Avg prompt throughput: {i}.4 tokens/s, Running: {i} reqs"
        )
    started = time.monotonic()
    signatures = group(lines(*texts))
    assert time.monotonic() - started < 3
    assert {s.signature: s.count for s in signatures}[
        "TypeError: sequence item <n>: expected str instance, NoneType found"
    ] == 1000
