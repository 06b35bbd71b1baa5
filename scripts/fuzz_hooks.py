"""schemathesis hooks for scripts/fuzz.

- problem_json: every 4xx answer is an RFC 9457 problem (application/problem+json
  with type, title, status and detail, and status equal to the HTTP status).
- Path parameters are drawn from the generated values *and* from real objects of the
  fuzz merchant ($RECUR_FUZZ_IDS), so id routes are exercised past their 404s.
"""

import json
import os

import schemathesis
from hypothesis import strategies as st


def _load_ids():
    path = os.environ.get("RECUR_FUZZ_IDS")
    if not path or not os.path.exists(path):
        return [], []
    with open(path) as f:
        data = json.load(f)
    return data.get("ids", []), data.get("customers", [])


IDS, CUSTOMERS = _load_ids()


def _header(response, name):
    value = response.headers.get(name) or response.headers.get(name.lower())
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value


@schemathesis.check
def problem_json(ctx, response, case):
    status = response.status_code
    if not 400 <= status < 500:
        return None
    content_type = _header(response, "content-type") or ""
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(f"{status} answered with content type {content_type!r}, not application/problem+json")
    try:
        body = json.loads(response.content or b"null")
    except ValueError as e:
        raise AssertionError(f"{status} problem body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise AssertionError(f"{status} problem body is not an object: {body!r}")
    for member in ("type", "title", "detail"):
        if not isinstance(body.get(member), str) or not body[member]:
            raise AssertionError(f"{status} problem body without {member}: {body!r}")
    if body.get("status") != status:
        raise AssertionError(f"problem status {body.get('status')!r} differs from the HTTP status {status}")
    for e in body.get("errors", []):
        if not isinstance(e, dict) or not e.get("field") or not e.get("message"):
            raise AssertionError(f"{status} problem with a malformed errors entry: {e!r}")
    return None


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    choices = [st.just(path_parameters)]
    if "id" in path_parameters and IDS:
        choices.append(st.sampled_from(IDS).map(lambda i: {**path_parameters, "id": i}))
    if "customerAccountId" in path_parameters and CUSTOMERS:
        choices.append(st.sampled_from(CUSTOMERS).map(lambda c: {**path_parameters, "customerAccountId": c}))
    return st.one_of(*choices)
