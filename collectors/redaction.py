"""Secrets out of evidence before it is stored, because stored evidence is later sent to an LLM.

Collectors copy what clusters say — log lines, metric labels, Kubernetes objects, alert
annotations — and clusters say secrets: a bearer token in an access log, a password in a
connection string, `value: hunter2` under `DB_PASSWORD` in a pod spec. The collector contract
(collectors/base.py) has the runner pass every draft through `redact` before an Evidence row is
written, so nothing downstream (the database, the UI, the prompt) ever holds the original.

Interface:
    redact_text(text) -> (text, count)   one string
    redact(value) -> (value, count)      JSON-like data (dict / list / tuple / str / scalars),
                                         returned as a new structure; the input is never mutated
    is_sensitive_key(name) -> bool       the key-name rule both of them use

The marker is one constant, `REDACTED = "[REDACTED]"`, whatever was removed. A kind-tagged marker
("[REDACTED:aws-key]") would tell a reader little that the surrounding text does not (the key name,
the header, the well-known prefix) and would make "is this already redacted?" a pattern instead of
a substring. Where the structure around a secret is evidence, it is kept: the header name and auth
scheme (`Authorization: Bearer [REDACTED]`), the user and host of a URL
(`postgres://app:[REDACTED]@db:5432/app`), the armour of a PEM block, the Slack webhook host, the
key names of a Kubernetes Secret. The marker contains `[`, which no value or token pattern below
accepts as a first character, so a second pass finds nothing: redaction is idempotent and a second
pass counts 0.

`count` is the number of replacements made. A value that an earlier rule already redacted in part
(a PEM block inside `"private_key": "…"`) is collapsed to the marker without counting it again.

What is deliberately NOT redacted (evidence, not secrets):
* `secretName: my-secret`, `secretKeyRef`, `secretRef`, `imagePullSecrets: [{name: …}]`, a pod's
  `secret:` volume source: they name a Secret, they do not contain it. Key names ending in a
  metadata word (name, ref, count, type, file, path, ttl, url, …) are references or measurements:
  `token_count=123`, `token_type: Bearer`, `password_file=/run/secrets/db`.
* LLM vocabulary: `max_tokens`, `prompt_tokens`, `num_tokens` (plural "tokens" is a count),
  `tokenizer`, `eos_token`, `pad_token`, `token_id`.
* Image digests (`sha256:…`), git SHAs, UUIDs, trace ids, pod-name hashes, IPs, URLs without a
  password, base64 outside a sensitive context, Helm `checksum/secret` annotations (a hash).
  There is no generic "high entropy string" rule: it cannot tell a digest from a key, and digests
  are exactly what an incident investigation needs.
* Placeholders: `${DB_PASSWORD}`, `$TOKEN`, `{{ .Values.password }}`, `<set to the key …>`,
  `null`, `true`/`false`, `***`. An empty value stays empty (an empty password is evidence).
* Prose: "password reset email sent", "failed to refresh token: context deadline exceeded",
  "Failed to watch *v1.Secret: secrets is forbidden". An unquoted `key: value` in the middle of
  a sentence is only redacted when the value looks like a credential (6+ characters with a
  digit, a symbol or an inner capital); at the start of a line (YAML, headers), after
  `{ [ ( , ;`, with a quoted key, with `=`, or for Authorization/Cookie headers, it always is.
* `None` and booleans under a sensitive key in `redact` (they cannot carry a secret), `PWD=/app`
  (the shell's working directory, not a password).
* An AWS secret access key (40 base64 characters) is only recognised next to its key name
  (`aws_secret_access_key=…`, `"SecretAccessKey": …`); standalone it is indistinguishable from
  other 40-character identifiers.
* `redact` does not rewrite dict keys; secrets live in values.

Not found (documented gaps, not promises): a password in prose without a key ("the password is
hunter2"); a short or lowercase-only value in mid-sentence `key: value` form (see Prose); a
"Bearer x" outside an Authorization header whose credential has no digit and is under 20
characters; `mysql -pSECRET` / `-p SECRET` (one-letter flags are too ambiguous); a quoted value
over 8 KiB; a plain-text value containing a quote (`password: it's` keeps "s").

Performance: every pattern is precompiled; each is either anchored on a literal or bounded
(`{0,N}`) with character classes that do not overlap what follows them, so no pattern can
backtrack more than a bounded distance per start position. Rules whose trigger substring is absent
from the text are skipped. Measured on a 1 MB mixed log (Python 3.11, one core): about 0.13 s,
see tests/collectors/test_redaction.py::test_a_1_mb_log_redacts_quickly; 100 KB adversarial
inputs (test_pathological_input_finishes) each take at most ~0.1 s.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["REDACTED", "is_sensitive_key", "redact", "redact_text"]

REDACTED = "[REDACTED]"

# Upper bound on the length of one value (the {…,8192} bounds in the value patterns below):
# longer ones would make a failed match expensive, and no credential is this long (a PEM
# RSA-8192 key is ~6.5 KB and has its own rule).
_MAX_VALUE = 8192

# --------------------------------------------------------------------------------------------
# Key names
# --------------------------------------------------------------------------------------------


def _words(words: str) -> frozenset[str]:
    """A set from space-separated words: the long vocabularies below read as prose."""
    return frozenset(words.split())


# Splits a key name into lower-case words: DB_PASSWORD, apiKey, X-Api-Key, secretKeyRef,
# spring.datasource.password all become word lists the rules below can reason about.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# A key containing one of these words holds a credential.
_SECRET_WORDS = _words(
    "password passwd passphrase pwd secret secrets token credential credentials creds "
    "cookie cookies authorization auth apikey bearer jwt privkey"
)
# Joined spellings inside one word: PGPASSWORD, accesstoken, clientsecret, xapikey.
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "cookie",
)
# "key" is a secret only with one of these in front of it: api_key, AWS_SECRET_ACCESS_KEY,
# private_key, X-Api-Key, Ocp-Apim-Subscription-Key — but not key, public_key, cache_key.
_KEY_QUALIFIERS = _words(
    "api access private secret signing encryption master account storage ssh client app "
    "auth hmac shared session subscription deploy tls ca sa"
)
# A key whose last word is a source-file extension is a code location in a stack trace or a
# klog header (token_refresher.go:91, DefaultJwtParser.java:385), not a key.
_SOURCE_EXTENSIONS = _words("go py java js ts jsx tsx rb rs kt scala cc cpp cs php swift ex exs")
# "pass" is a password only as the last word (REDIS_PASS, smtp_pass), never in pass_rate.
_LAST_WORD_SECRETS = frozenset({"pass"})
# A key ending in one of these describes or points at a secret instead of holding it:
# secretName, secretKeyRef, token_count, token_type, password_file, token_url, cookie_domain.
_METADATA_LAST_WORDS = _words(
    "name names ref refs reference references count counts num number limit limits length "
    "len size usage used type types kind ttl expiry expires expiration exp expired at "
    "time timestamp date created updated rotated rotation age seconds second secs ms "
    "millis milliseconds minutes hours days duration latency lifetime timeout interval "
    "file files path paths dir directory location mount mounts volume url uri urls "
    "endpoint endpoints host header headers prefix suffix policy policies reset version "
    "versions enabled enable disabled required optional provider providers store source "
    "sources namespace stdin format field fields template mode method methods status "
    "state strength min max algorithm alg domain samesite secure httponly error errors "
    "exception exceptions failed failure failures success valid validation bucket buckets "
    "total sum avg mean rate ratio budget issuer audience scope scopes claims checksum changed"
)
# A key mentioning one of these anywhere is a hash or a lifetime, not a credential: Helm's
# `checksum/secret` annotation (a digest of the Secret, useful to see it changed),
# `refresh_token_expires_in`.
_METADATA_ANY_WORDS = _words("checksum expires expiry expiration ttl")
# "token" in LLM vocabulary: eos_token, pad_token, special_token, time_to_first_token,
# max_token, ms_per_token. The word before "token" decides.
_LLM_TOKEN_QUALIFIERS = _words(
    "eos bos pad unk sep cls mask special stop start end added image audio video vision "
    "max min num total prompt completion output input generated generation context "
    "decoder encoder bad first next per inter"
)


@lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    """Whether a key NAME says its value is a credential (shared by dicts, text and flags).

    Why word-based rather than substring-based: `token` must match `GITHUB_TOKEN` and
    `accessToken` but not `tokenizer`, `max_tokens` or `token_count`; `key` must match `api_key`
    but not `cache_key`; `secret` must match `client_secret` but not `secretName`.
    """
    words = [w.lower() for w in _WORD.findall(name)]
    if not words:
        return False
    if words[-1] in ("signature", "sig"):
        # X-Amz-Signature, request_signature: a grant. A bare `signature` is usually a description
        # (a log signature, an image signature), and our own evidence uses that key.
        return len(words) > 1
    if name.lower().endswith(".key"):
        return True  # a key file in a Secret or a config map: tls.key, server.key, ca.key
    last = words[-1]
    if (
        last in _METADATA_LAST_WORDS
        or (last in _SOURCE_EXTENSIONS and "." in name)
        or _METADATA_ANY_WORDS.intersection(words)
    ):
        return False
    if last in _LAST_WORD_SECRETS:
        return True
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        if word in ("key", "keys"):
            if previous in _KEY_QUALIFIERS:
                return True
            continue
        if word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            if word.endswith("token") and (
                previous in _LLM_TOKEN_QUALIFIERS or (i == len(words) - 2 and last in ("id", "ids"))
            ):
                continue  # eos_token, time_to_first_token, token_id: vocabulary, not credentials
            return True
    return False


_HEADER_KEYS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _is_header_key(key: str) -> bool:
    """Headers whose whole value (to the end of the line) is a credential, scheme and all."""
    return key.lstrip("-").lower() in _HEADER_KEYS


# --------------------------------------------------------------------------------------------
# Values that are not secrets even under a sensitive key
# --------------------------------------------------------------------------------------------

_PLACEHOLDER_WORDS = _words(
    "null none nil <nil> <none> undefined true false str string bytes int redacted "
    "<redacted> hidden <hidden> masked filtered %s ?"
)
# Why: a reference to where the secret comes from is evidence ("the password is read from
# $DB_PASSWORD"), and an already-masked value carries nothing. Env-var names are upper case on
# purpose, so `$ecretP4ss` (a password starting with $) is still redacted.
_PLACEHOLDER = re.compile(
    r"""
      \$\{[A-Z_][A-Z0-9_]{0,127}\}      # ${DB_PASSWORD}
    | \$[A-Z_][A-Z0-9_]{0,127}          # $DB_PASSWORD
    | \{\{[^{}]{0,256}\}\}              # {{ .Values.password }} (Helm / Go template)
    | <[^<>]{0,256}>.{0,512}            # <token>, <your password here>
    | <set\ to\ the\ key.{0,512}         # kubectl describe: <set to the key 'password' in secret 'db'>
    | [*xX•]{3,}                        # ***, xxxx: already masked
    """,
    re.VERBOSE | re.DOTALL,
)
# Why: a traceback shows source lines such as `token = self._token` or
# `password = settings.DB_PASSWORD`; the right-hand side is code, not a secret.
_CODE_PATH = re.compile(
    r"(?:self|cls|this|os|settings|config|conf|cfg|request|req|ctx|context|args|kwargs|opts"
    r"|options|params|env|environ)(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}){1,8}"
)


def _is_placeholder(value: str) -> bool:
    stripped = value.strip()
    return (
        not stripped
        or stripped == REDACTED
        or stripped.lower() in _PLACEHOLDER_WORDS
        or _PLACEHOLDER.fullmatch(stripped) is not None
    )


def _looks_like_credential(value: str) -> bool:
    """Whether a value after `some prose word: ` is worth redacting.

    Why: Go-style errors read "failed to refresh token: context deadline exceeded"; the value is
    English. Credentials are long and have digits, symbols or inner capitals.
    """
    if len(value) < 6 or value.endswith(":"):
        return False
    return any(c.isdigit() or not c.isalnum() or (c.isupper() and i) for i, c in enumerate(value))


# --------------------------------------------------------------------------------------------
# Text rules, applied in this order
# --------------------------------------------------------------------------------------------

# 1. PEM private keys, multi-line or with JSON-escaped "\n". Why first: every other rule works
# within a line and would leave the middle of the block behind. The body may not contain
# "-----", so the match ends at the first END line; a block cut off by a log-line limit (no END)
# is redacted up to the end of its base64. Certificates and public keys are not matched.
_PEM = re.compile(
    r"(?P<begin>-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)(?!\[REDACTED\])"
    r"(?:(?:[^-]|-(?!----)){1,65536}(?P<end>-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
    r"|(?:\\[nr]|\s|[A-Za-z0-9+/=]){1,65536})"
)

# 2. A password in a URL's userinfo: scheme://user:password@host. The user and host stay
# (evidence: which account, which database). The password may itself contain "@" (greedy up to
# the last "@" before the path), and the user may be empty (redis://:password@redis:6379).
_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s:/?#@\[\]\"'<>]{0,256}:)"
    r"(?!\[REDACTED\])(?P<secret>[^\s/?#\"'<>]{1,1024})@"
)

# 3. curl -u user:password / --user=user:password (curl's command line shows up in job logs).
_CURL_USER = re.compile(
    r"(?<!\S)(?P<prefix>(?:-u|--user)(?:[ \t]{1,8}|=)(?P<q>[\"']?)(?P<user>[^\s:\"']{1,256}):)"
    r"(?!\[REDACTED\])(?P<secret>[^\s\"']{1,1024})(?P=q)"
)

# 4. Webhook URLs whose path is the credential: whoever has it can post to the channel.
# The host and the fixed part of the path stay, so "alerts go to Slack" is still visible.
_WEBHOOK = re.compile(
    r"(?P<prefix>https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)/"
    r"|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/))"
    r"(?P<secret>[A-Za-z0-9/_\-]{8,})",
    re.IGNORECASE,
)

# 5. Kubernetes env entries, where the sensitive name and the value are two fields:
#    - name: DB_PASSWORD          {"name": "DB_PASSWORD", "value": "hunter2"}
#      value: hunter2             {Name:DB_PASSWORD Value:hunter2 ValueFrom:nil}
# Why: pod specs are evidence, and this is how they carry secrets that did not go through a
# Secret. `valueFrom:` (a reference) does not match.
_ENV_PAIR = re.compile(
    r"(?<![A-Za-z0-9_])(?P<nq>\\?[\"']?)name(?P=nq)[ \t]{0,16}[:=][ \t]{0,16}"
    r"(?P<q>\\?[\"']?)(?P<key>[A-Za-z_][A-Za-z0-9_.\-]{0,127})(?P=q)"
    r"[ \t]{0,16},?[ \t]{0,16}(?:\r?\n[ \t]{0,64})?"
    r"(?P<vq>\\?[\"']?)value(?P=vq)[ \t]{0,16}[:=][ \t]{0,16}",
    re.IGNORECASE,
)

# 6. key=value, key: value, "key": "value", key => value, key := value, Go's Key:[value],
# env-style DB_PASSWORD=…, query strings ?access_token=…, headers. This pattern matches every
# candidate key; is_sensitive_key decides, in Python, which to redact (a regex cannot tell
# token_count from access_token without an unbounded alternation). The key must start a word
# (no match inside another identifier or a URL path) and may be quoted, escaped-quoted (JSON
# inside a JSON string) or a --flag=. It may contain "/" so that Kubernetes annotation keys are
# read whole: `checksum/secret: 9f86d0…` is a Helm checksum, not a secret.
_KEY = re.compile(
    r"(?<![A-Za-z0-9_.\-/])(?P<kq>\\?[\"']?)(?P<key>-{0,2}[A-Za-z_][A-Za-z0-9_.\-/]{0,127})(?P=kq)"
    r"(?P<sep>[ \t]{0,16}(?::=|=>|[:=])[ \t]{0,16})"
)
# The value after a key. Quoted forms first; a bare value runs to the next space or delimiter
# (`,;&` end query-string and logfmt values, brackets end Go maps and code). A bare value may not
# start with "=" (so `password == x` in code is not a value) nor "[" (the marker).
_QUOTED_VALUE = (
    r"\\\"(?P<eq>[^\"\\\r\n]{1,8192})\\\""  # \"…\" inside a JSON string
    r"|\"(?P<dq>(?:[^\"\\\r\n]|\\.){1,8192})\""  # "…"
    r"|'(?P<sq>(?:[^'\\\r\n]|\\.){1,8192})'"  # '…'
    r"|`(?P<bt>[^`\r\n]{1,8192})`"  # `…`
    r"|\[(?P<bq>[^\[\]{}\"'\r\n][^\[\]\r\n]{0,8191})\]"  # Go: map[Authorization:[Bearer …]]
)
_VALUE = re.compile(
    _QUOTED_VALUE + r"|(?P<bare>(?:[Bb]earer[ \t]{1,8}|[Bb]asic[ \t]{1,8})?"  # token=Bearer abc
    r"[^\s\"'`,;&<>(){}\[\]\\=][^\s\"'`,;&<>(){}\[\]\\]{0,8191})"
)
# Header values (Authorization, Cookie) and values of keys that start their line (YAML, .env,
# .properties) run to the end of the line: `Cookie: theme=dark; session=…` must lose the session
# too, `password: correct horse` and `spring.datasource.password=Tr0ub4dor&3` all of it.
_LINE_VALUE = re.compile(_QUOTED_VALUE + r"|(?P<line>[^\s\"'`\[\\][^\"'`\r\n\\]{0,8191})")
# An auth scheme is kept: "Bearer" vs "Basic" is evidence, the credential after it is not.
_AUTH_SCHEME = re.compile(
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|ntlm|bot|apikey|dpop|hmac|sso-key"
    r"|aws4-hmac-sha256)[ \t]+)(?P<credential>\S.*)",
    re.IGNORECASE | re.DOTALL,
)
# What may precede a key on its line for the key to be "at the start of a line": indentation,
# a YAML list dash, a curl -v arrow, a diff sign, `export`.
_LINE_PREFIX = re.compile(r"[ \t]*(?:(?:[-+*>#<|]|export|set|ENV|ARG)[ \t]+)*")
# A YAML block scalar indicator (`|`, `>-`, `|2`): the value is the indented lines below.
_BLOCK_SCALAR = re.compile(r"[|>][-+]?[0-9]?[-+]?")

# 7. Command-line flags with a space: --password hunter2, -token abc (container args, ps output).
# The value follows a space, or is the next item of a JSON or YAML argument list:
#   "args": ["--api-key", "abc"]        args:\n  - --api-key\n  - abc
_FLAG = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<key>--?[A-Za-z][A-Za-z0-9_\-]{0,63})"
    r"(?:[ \t]{1,8}|[\"'][ \t]{0,8},[ \t]{0,8}(?:\r?\n[ \t]{0,64})?(?=[\"'])"
    r"|[ \t]{0,8}\r?\n[ \t]{0,64}-[ \t]{1,8})"
)
_FLAG_ONLY = re.compile(r"--?[A-Za-z][A-Za-z0-9_\-]{0,63}")

# 8. "Bearer <token>" anywhere (a header dumped without its name, a curl command in prose).
# The credential must look like one (8+ characters with a digit, or 20+), so prose such as
# "Bearer token expired" or "bearer authentication failed" survives.
_BEARER = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<prefix>[Bb][Ee][Aa][Rr][Ee][Rr][ \t]{1,8})"
    r"(?P<secret>[A-Za-z0-9\-._~+/]{8,4096}=*)"
)
# 9. "Basic <base64>" anywhere: only when it decodes to "user:password", so "Basic auth" and
# "Basic authentication failed" survive.
_BASIC = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<prefix>[Bb][Aa][Ss][Ii][Cc][ \t]{1,8})"
    r"(?P<secret>[A-Za-z0-9+/]{4,4096}={0,2})(?![A-Za-z0-9+/=])"
)

# 10. Tokens recognisable by their published prefix, wherever they are. Each alternative says
# which issuer and why its shape is safe from false positives. The leading look-behind means a
# match starts only at the beginning of a run of token characters, so a long run is scanned once.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    # AWS access key ids: AKIA (long-term), ASIA (STS temporary), ABIA/ACCA (service-specific).
    r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    # OpenAI (sk-…, sk-proj-…, sk-svcacct-…) and Anthropic (sk-ant-api03-…). At least one
    # capital letter: Kubernetes names are lower case, so "sk-learn-model-7c9f8d6b54" survives.
    r"|sk-(?=[A-Za-z0-9_\-]{0,512}[A-Z])[A-Za-z0-9_\-]{20,}"
    # Stripe secret and restricted keys, webhook signing secrets (publishable pk_ keys are public).
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|whsec_[A-Za-z0-9+/=]{16,}"
    # Slack bot/user/app/legacy/config tokens and app-level tokens.
    r"|(?:xox[abeoprs]|xapp)-[A-Za-z0-9\-]{10,}"
    # GitHub: classic PATs, OAuth, user-to-server, server-to-server, refresh; fine-grained PATs.
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    # GitLab personal access tokens.
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    # Google API keys (always 39 characters), OAuth access tokens, OAuth client secrets.
    r"|AIza[A-Za-z0-9_\-]{35}(?![A-Za-z0-9_\-])"
    r"|ya29\.[A-Za-z0-9_\-]{20,}"
    r"|GOCSPX-[A-Za-z0-9_\-]{20,}"
    # Hugging Face tokens (hf_ + 34); underscores excluded so hf_hub_download survives.
    r"|hf_[A-Za-z0-9]{30,}"
    # Vigil's own integration tokens and user keys (incidents/tokens.py: prefix + 43 urlsafe).
    r"|vg[ik]_[A-Za-z0-9_\-]{16,}"
    # npm automation tokens.
    r"|npm_[A-Za-z0-9]{36}"
    # HashiCorp Vault service, batch and recovery tokens (hvs./hvb./hvr. + base62).
    r"|hv[sbr]\.[A-Za-z0-9_\-]{24,}"
    # JWTs: base64url JSON header and payload (both start with eyJ = '{"'), signature possibly
    # empty (alg=none tokens are still credentials to a careless verifier).
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
    r")"
)
# Lower-case substrings that must be present for a rule to be worth running; `in` on a string is
# far faster than a regex scan, and most log lines contain none of them.
_TOKEN_TRIGGERS = (
    "akia",
    "asia",
    "abia",
    "acca",
    "sk-",
    "sk_",
    "rk_",
    "whsec_",
    "xox",
    "xapp-",
    "gh",
    "github_pat_",
    "glpat-",
    "aiza",
    "ya29.",
    "gocspx-",
    "hf_",
    "vgi_",
    "vgk_",
    "npm_",
    "hvs.",
    "hvb.",
    "hvr.",
    "eyj",
)
_KEY_TRIGGERS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "cred",
    "cookie",
    "sig",
    "bearer",
    "jwt",
)


# --------------------------------------------------------------------------------------------
# redact_text
# --------------------------------------------------------------------------------------------


# Short strings found to hold no secret, remembered per process: alert labels and annotations
# repeat on every notification (a storm re-sends the same ones thousands of times). Only clean
# strings are kept, so the set never holds a secret; it is cleared when full.
_CLEAN: dict[str, None] = {}
_CLEAN_MAX_ENTRIES = 8192
_CLEAN_MAX_LENGTH = 512


def redact_text(text: str) -> tuple[str, int]:
    """The text with every secret replaced by REDACTED, and how many replacements were made.

    Rules run from the most structural (PEM blocks, URLs, key/value pairs) to the most local
    (token prefixes), so a secret is replaced once, by the rule that keeps the most context.
    """
    if not text or text in _CLEAN:
        return text, 0
    lower = text.lower()
    if _ANY_TRIGGER.search(lower) is None:
        # No rule's trigger is in the text, so no rule would run (the common case).
        _remember_clean(text)
        return text, 0
    redacted, total = _redact_text(text, lower)
    if not total and redacted == text:
        _remember_clean(text)
    return redacted, total


def _remember_clean(text: str) -> None:
    if len(text) <= _CLEAN_MAX_LENGTH:
        if len(_CLEAN) >= _CLEAN_MAX_ENTRIES:
            _CLEAN.clear()
        _CLEAN[text] = None


def _redact_text(text: str, lower: str) -> tuple[str, int]:
    """Each rule of _RULES whose trigger is in the text (`lower`: the text in lower case)."""
    total = 0
    for rule, triggers in _RULES:
        if any(t in lower for t in triggers):
            text, n = rule(text)
            total += n
    return text, total


def _redact_pem(text: str) -> tuple[str, int]:
    return _PEM.subn(lambda m: m["begin"] + REDACTED + (m["end"] or ""), text)


def _prefix_sub(pattern: re.Pattern[str], text: str) -> tuple[str, int]:
    """Replace group "secret", keep group "prefix"; placeholders (${VAR}) are not counted."""
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        secret, user = m["secret"], m.groupdict().get("user") or ""
        if _is_placeholder(secret) or (secret.isdigit() and user.isdigit()):
            return m[0]  # ${DB_PASSWORD}, or `docker run -u 1000:1000` (uid:gid, not user:password)
        count += 1
        return text[m.start() : m.start("secret")] + REDACTED + text[m.end("secret") : m.end()]

    return pattern.sub(replace, text), count


def _redact_url_passwords(text: str) -> tuple[str, int]:
    return _prefix_sub(_URL_USERINFO, text)


def _redact_curl_user(text: str) -> tuple[str, int]:
    return _prefix_sub(_CURL_USER, text)


def _redact_webhooks(text: str) -> tuple[str, int]:
    return _prefix_sub(_WEBHOOK, text)


def _redact_bearer(text: str) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        credential = m["secret"]
        if len(credential) < 20 and not any(c.isdigit() for c in credential):
            return m[0]
        count += 1
        return m["prefix"] + REDACTED

    return _BEARER.sub(replace, text), count


def _redact_basic(text: str) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        credential = m["secret"]
        if len(credential) % 4:
            return m[0]
        try:
            decoded = base64.b64decode(credential, validate=True)
        except (binascii.Error, ValueError):
            return m[0]
        if b":" not in decoded:
            return m[0]
        count += 1
        return m["prefix"] + REDACTED

    return _BASIC.sub(replace, text), count


def _redact_tokens(text: str) -> tuple[str, int]:
    return _TOKEN.subn(REDACTED, text)


class _Splicer:
    """Builds the output of a rule that finds keys with one regex and reads values with another.

    Why not re.sub: a key that turns out not to be sensitive must not consume its value, or a
    secret inside it would be skipped (`url=https://x/?token=abc`: the `url` match would swallow
    `token=abc`). Here a rejected key consumes only itself and the scan goes on inside its value.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str] = []
        self.pos = 0
        self.count = 0

    def replace(self, start: int, end: int, replacement: str, counted: bool = True) -> None:
        self.parts.append(self.text[self.pos : start])
        self.parts.append(replacement)
        self.pos = end
        self.count += counted

    def result(self) -> tuple[str, int]:
        if not self.parts:
            return self.text, 0
        self.parts.append(self.text[self.pos :])
        return "".join(self.parts), self.count


def _redact_value_at(
    splicer: _Splicer,
    key: str,
    value_start: int,
    *,
    key_start: int,
    line_value: bool,
    prose_check: bool = False,
) -> None:
    """Read the value at value_start and, if it is a secret, splice in the marker."""
    text = splicer.text
    pattern = _LINE_VALUE if line_value else _VALUE
    vm = pattern.match(text, value_start)
    if vm is None:
        return
    group = vm.lastgroup or ""
    start, end = vm.span(group)
    content = vm[group]
    if group == "line":
        stripped = content.rstrip()
        end -= len(content) - len(stripped)
        content = stripped
        if _BLOCK_SCALAR.fullmatch(content):
            # `token: |` — the secret is the indented block below, indicator included.
            block_end = _yaml_block_end(text, key_start, end)
            if block_end == end:
                return
            content = text[start:block_end]
            end = block_end
    if _is_placeholder(content) or (group == "bq" and f"[{content}]" == REDACTED):
        return
    if key == "PWD" and content.startswith("/"):
        return  # the shell's working directory in an environment dump
    if group == "bare":
        after = text[end : end + 1]
        if after in ("(", "[") or _CODE_PATH.fullmatch(content):
            return  # code in a traceback: `token = request.headers.get(...)`
    if prose_check and group in ("bare", "line") and not _looks_like_credential(content):
        return
    replacement = REDACTED
    if key.lstrip("-").lower() in ("authorization", "proxy-authorization"):
        scheme = _AUTH_SCHEME.match(content)
        if scheme:
            if scheme["credential"].strip() == REDACTED:
                return
            replacement = scheme["scheme"] + REDACTED
    # A value an earlier rule redacted in part (a PEM block in a JSON value) is collapsed to the
    # marker without being counted twice.
    splicer.replace(start, end, replacement, counted=REDACTED not in content)


def _yaml_block_end(text: str, key_start: int, line_end: int) -> int:
    """Where the YAML block scalar that starts after line_end ends: the last line indented
    deeper than the key's column (blank lines included), at most _MAX_VALUE * 8 characters on."""
    indent = key_start - (text.rfind("\n", max(0, key_start - 64), key_start) + 1)
    limit = min(len(text), line_end + _MAX_VALUE * 8)
    end = line_end
    position = line_end
    while position < limit and text[position] in "\r\n":
        next_start = text.find("\n", position) + 1
        newline = text.find("\n", next_start, limit)
        next_end = limit if newline == -1 else newline
        row = text[next_start:next_end]
        body = row.lstrip(" \t")
        if body and len(row) - len(body) <= indent:
            break
        if body:
            end = next_end - (len(row) - len(row.rstrip()))
        position = next_end
    return end


def _context(text: str, start: int) -> tuple[bool, str]:
    """(whether the key at start begins its line, the nearest non-blank character before it)."""
    lo = max(0, start - 48)
    window = text[lo:start]
    newline = window.rfind("\n")
    if newline == -1 and lo > 0:
        at_line_start = False
    else:
        at_line_start = _LINE_PREFIX.fullmatch(window[newline + 1 :]) is not None
    before = window.rstrip(" \t")[-1:]
    return at_line_start, before


def _redact_key_values(text: str) -> tuple[str, int]:
    splicer = _Splicer(text)
    for m in _KEY.finditer(text):
        if m.start() < splicer.pos:
            continue  # inside a value already replaced
        key = m["key"]
        if not is_sensitive_key(key.lstrip("-")):
            continue
        colon = m["sep"].strip() == ":"
        quoted_key = bool(m["kq"])
        at_line_start, before = _context(text, m.start())
        structural = quoted_key or at_line_start or before in ("{", "[", "(", ",", ";", "")
        header = _is_header_key(key)
        # `Failed to watch *v1.Secret: secrets is forbidden`, `refresh token: deadline exceeded`:
        # mid-sentence, `key: value` is usually prose; only a credential-looking value counts.
        # The same holds for `authorization: denied`; a real header value has a space or a symbol.
        prose_check = colon and not structural
        # `token = request.headers.get(...)` at the start of a traceback line is code: only an
        # unspaced `KEY=value` (.env, .properties) or a `key: value` takes the rest of the line.
        spaced_equals = not colon and m["sep"] != m["sep"].strip()
        line_value = header or (at_line_start and not quoted_key and not spaced_equals)
        _redact_value_at(
            splicer,
            key,
            m.end(),
            key_start=m.start("key"),
            line_value=line_value,
            prose_check=prose_check,
        )
    return splicer.result()


def _redact_env_pairs(text: str) -> tuple[str, int]:
    splicer = _Splicer(text)
    for m in _ENV_PAIR.finditer(text):
        if m.start() >= splicer.pos and is_sensitive_key(m["key"]):
            _redact_value_at(splicer, m["key"], m.end(), key_start=m.start(), line_value=False)
    return splicer.result()


def _redact_flags(text: str) -> tuple[str, int]:
    splicer = _Splicer(text)
    for m in _FLAG.finditer(text):
        if m.start() < splicer.pos or text.startswith("-", m.end()):
            continue
        if is_sensitive_key(m["key"].lstrip("-")):
            _redact_value_at(splicer, m["key"], m.end(), key_start=m.start(), line_value=False)
    return splicer.result()


# --------------------------------------------------------------------------------------------
# redact: JSON-like structures
# --------------------------------------------------------------------------------------------

# Kubernetes shapes that sit under a "sensitive" key but only name a Secret:
#   volumes[].secret: {secretName, items, defaultMode, optional}
#   projected sources[].secret: {name, items, optional}
#   projected sources[].serviceAccountToken: {path, expirationSeconds, audience}
#   imagePullSecrets / ServiceAccount.secrets: [{name}] (ObjectReference)
# The text rules in the order they run, each with the lower-case substrings that must be in the
# text for it to be worth running.
_RULES: tuple[tuple[Callable[[str], tuple[str, int]], tuple[str, ...]], ...] = (
    (_redact_pem, ("private key",)),
    (_redact_url_passwords, ("://",)),
    (_redact_curl_user, ("-u",)),
    (_redact_webhooks, ("hooks.slack.com", "/api/webhooks/")),
    (_redact_env_pairs, ("value",)),
    (_redact_key_values, _KEY_TRIGGERS),
    (_redact_flags, _KEY_TRIGGERS),
    (_redact_bearer, ("bearer",)),
    (_redact_basic, ("basic",)),
    (_redact_tokens, _TOKEN_TRIGGERS),
)
# Any trigger at all, in one scan: most strings contain none, and then no rule runs.
_ANY_TRIGGER = re.compile("|".join(sorted({re.escape(t) for _, ts in _RULES for t in ts})))


_REFERENCE_SHAPES: dict[str, frozenset[str]] = {
    "secret": frozenset({"secretName", "secret_name", "name", "items", "defaultMode", "optional"}),
    "serviceAccountToken": frozenset({"path", "expirationSeconds", "audience"}),
    "service_account_token": frozenset({"path", "expiration_seconds", "audience"}),
}
_OBJECT_REFERENCE_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "kind",
        "apiVersion",
        "api_version",
        "uid",
        "resourceVersion",
        "fieldPath",
    }
)
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def redact(value: Any) -> tuple[Any, int]:
    """A redacted copy of JSON-like data, and how many replacements were made.

    Values under a sensitive key (is_sensitive_key) are replaced whatever they contain — a
    string, a number, a nested object — except None and booleans, which cannot carry a secret,
    placeholders such as "${DB_PASSWORD}", and the Kubernetes reference shapes above. Every other
    string goes through redact_text. Kubernetes-specific: env-style {"name": X, "value": V} pairs
    redact V when X is sensitive; a Secret object's data/stringData values are all redacted
    (their keys stay: which keys a Secret has is evidence); ["--token", "abc"] argument lists
    redact the argument after a sensitive flag. Mappings come back as dicts, lists as lists,
    tuples as tuples; other values are returned as they are.
    """
    # Exact types first: what json.loads makes (a webhook body walked for every notification)
    # is decided by one lookup instead of an abstract-class check per value.
    handler = _BY_TYPE.get(type(value))
    if handler is not None:
        return handler(value)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return _redact_mapping(value)
    if isinstance(value, (list, tuple)):
        return _redact_sequence(value)
    return value, 0


def _unchanged(value: Any) -> tuple[Any, int]:
    return value, 0


def _replace_value(key: str, value: Any) -> tuple[Any, int]:
    if value is None or isinstance(value, bool):
        return value, 0
    if isinstance(value, str) and (
        _is_placeholder(value) or (key == "PWD" and value.startswith("/"))
    ):
        return value, 0
    return REDACTED, 1


def _is_reference(key: str, value: Any) -> bool:
    """Whether a value under a sensitive key only points at a Secret (see _REFERENCE_SHAPES)."""
    shape = _REFERENCE_SHAPES.get(key)
    if shape is not None and isinstance(value, Mapping) and set(value) <= shape:
        return True
    items = value if isinstance(value, (list, tuple)) else [value]
    return bool(items) and all(
        isinstance(item, Mapping) and "name" in item and set(item) <= _OBJECT_REFERENCE_FIELDS
        for item in items
    )


def _is_secret_object(mapping: Mapping) -> bool:
    """A Kubernetes Secret, as the API, kubectl or the Python client's to_dict() shows it."""
    if "data" not in mapping and "stringData" not in mapping and "string_data" not in mapping:
        return False  # the usual case, decided without reading a value
    kind = mapping.get("kind")
    secret_type = mapping.get("type")
    looks_like_secret = kind == "Secret" or (
        isinstance(secret_type, str)
        and (secret_type == "Opaque" or secret_type.startswith("kubernetes.io/"))
        and "metadata" in mapping
    )
    return looks_like_secret and any(k in mapping for k in ("data", "stringData", "string_data"))


def _pair_name(mapping: Mapping) -> str | None:
    """The sensitive name of a {"name": X, "value": V} (or Key/Value) pair, else None."""
    if "value" not in mapping and "Value" not in mapping:
        return None
    for field in ("name", "Name", "key", "Key"):
        name = mapping.get(field)
        if isinstance(name, str) and is_sensitive_key(name):
            return name
    return None


def _redact_mapping(mapping: Mapping) -> tuple[dict, int]:
    out: dict = {}
    total = 0
    secret_object = _is_secret_object(mapping)
    pair_name = _pair_name(mapping)
    for key, value in mapping.items():
        if secret_object and key in ("data", "stringData", "string_data"):
            new, n = _redact_secret_data(value)
        elif secret_object and key == "metadata" and isinstance(value, Mapping):
            new, n = _redact_secret_metadata(value)
        elif pair_name is not None and key in ("value", "Value"):
            new, n = _replace_value(pair_name, value)
        elif isinstance(key, str) and is_sensitive_key(key) and not _is_reference(key, value):
            new, n = _replace_value(key, value)
        else:
            new, n = redact(value)
        out[key] = new
        total += n
    return out, total


def _redact_secret_data(data: Any) -> tuple[Any, int]:
    """Every value of a Secret's data is secret, whatever its key is called (DATABASE_URL…)."""
    if not isinstance(data, Mapping):
        return _replace_value("data", data)
    out: dict = {}
    total = 0
    for key, value in data.items():
        out[key], n = _replace_value(str(key), value)
        total += n
    return out, total


def _redact_secret_metadata(metadata: Mapping) -> tuple[dict, int]:
    """A Secret's last-applied-configuration annotation repeats its data in clear: replace it."""
    annotations = metadata.get("annotations")
    replaced = 0
    if isinstance(annotations, Mapping) and annotations.get(_LAST_APPLIED) not in (
        None,
        "",
        REDACTED,
    ):
        metadata = {**metadata, "annotations": {**annotations, _LAST_APPLIED: REDACTED}}
        replaced = 1
    out, total = _redact_mapping(metadata)
    return out, total + replaced


def _redact_sequence(items: list | tuple) -> tuple[list | tuple, int]:
    out: list = []
    total = 0
    previous: Any = None
    for item in items:
        if (
            isinstance(previous, str)
            and isinstance(item, str)
            and _FLAG_ONLY.fullmatch(previous)
            and not item.startswith("-")
            and is_sensitive_key(previous.lstrip("-"))
        ):
            new, n = _replace_value(previous.lstrip("-"), item)
        else:
            new, n = redact(item)
        out.append(new)
        total += n
        previous = item
    return (tuple(out) if isinstance(items, tuple) else out), total


_BY_TYPE: dict[type, Callable[[Any], tuple[Any, int]]] = {
    str: redact_text,
    dict: _redact_mapping,
    list: _redact_sequence,
    tuple: _redact_sequence,
    int: _unchanged,
    float: _unchanged,
    bool: _unchanged,
    type(None): _unchanged,
}
