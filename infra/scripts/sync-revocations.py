#!/usr/bin/env python3
"""Make a CloudFront KeyValueStore hold exactly the revoked Lanyard serials.

Input: the CA's revocation export, `lanyard-ca revoked --format json` (a JSON list of
{"serial": "00:8f:..", "revoked_at": RFC 3339, "reason": "...", "not_after": RFC 3339}),
from a file or stdin. Keys are the lowercase colon-hex serials the connection function
looks up; values a small JSON (reason, revocation time). Expired certificates leave the
store (they fail at the edge anyway), which keeps it under CloudFront's 5 MB.

Idempotent: it compares with the store's current keys and sends only the difference, in
updates of at most 50 keys (CloudFront's limit), each with the store's current ETag.

    lanyard-ca revoked --dir /var/lib/lanyard-ca --format json |
      sync-revocations.py --kvs-arn arn:aws:cloudfront::123456789012:key-value-store/... -

Needs boto3 with the AWS CRT (`pip install 'boto3' 'botocore[crt]'`): the KeyValueStore
API is signed with SigV4A, which botocore implements only through the CRT.
"""

import argparse
import datetime as dt
import json
import sys

BATCH = 50


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def canonical(serial):
    """Lowercase colon-hex DER INTEGER content, as the CA exports and the function looks up."""
    h = "".join(c for c in serial.lower() if c in "0123456789abcdef")
    if len(h) % 2:
        h = "0" + h
    while len(h) > 2 and h.startswith("00"):
        h = h[2:]
    if int(h[:2], 16) >= 0x80:
        h = "00" + h
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def desired(export, now):
    """The key/value pairs the store should hold."""
    out = {}
    for row in export:
        if parse_time(row["not_after"]) <= now:
            continue
        value = json.dumps({"reason": row["reason"], "revoked_at": row["revoked_at"]}, sort_keys=True)
        out[canonical(row["serial"])] = value
    return out


def plan(current, want):
    """(puts, deletes) that turn `current` into `want`."""
    puts = sorted((k, v) for k, v in want.items() if current.get(k) != v)
    deletes = sorted(k for k in current if k not in want)
    return puts, deletes


def batches(puts, deletes, size=BATCH):
    """Updates of at most `size` keys each, puts first."""
    items = [("put", p) for p in puts] + [("delete", d) for d in deletes]
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        yield [p for kind, p in chunk if kind == "put"], [d for kind, d in chunk if kind == "delete"]


def current_keys(client, arn):
    keys = {}
    kwargs = {"KvsARN": arn}
    while True:
        page = client.list_keys(**kwargs)
        for item in page.get("Items", []):
            keys[item["Key"]] = item["Value"]
        token = page.get("NextToken")
        if not token:
            return keys
        kwargs["NextToken"] = token


def sync(client, arn, export, now, dry_run=False, out=sys.stdout):
    want = desired(export, now)
    have = current_keys(client, arn)
    puts, deletes = plan(have, want)
    print(f"{len(want)} revoked serials wanted, {len(have)} in the store: "
          f"{len(puts)} to put, {len(deletes)} to delete", file=out)
    if dry_run:
        for k, _ in puts:
            print(f"put    {k}", file=out)
        for k in deletes:
            print(f"delete {k}", file=out)
        return puts, deletes
    etag = client.describe_key_value_store(KvsARN=arn)["ETag"]
    for p, d in batches(puts, deletes):
        resp = client.update_keys(
            KvsARN=arn,
            IfMatch=etag,
            Puts=[{"Key": k, "Value": v} for k, v in p],
            Deletes=[{"Key": k} for k in d],
        )
        etag = resp["ETag"]
    return puts, deletes


def require_sigv4a():
    """The KeyValueStore API is signed with SigV4A, which botocore signs only with the AWS
    CRT installed; without it every request fails with a message about a missing
    dependency, deep inside the first call. Say so before any request."""
    try:
        import awscrt  # noqa: F401  (botocore[crt] installs it)
    except ImportError:
        sys.exit(
            "sync-revocations.py: the CloudFront KeyValueStore API needs SigV4A signing, "
            "which botocore does only with the AWS CRT: pip install 'botocore[crt]'"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kvs-arn", required=True, help="ARN of the KeyValueStore (module output revoked_kvs_arn)")
    ap.add_argument("export", help="revocation export JSON file, or - for stdin")
    ap.add_argument("--dry-run", action="store_true", help="print the changes without making them")
    args = ap.parse_args(argv)
    data = sys.stdin.read() if args.export == "-" else open(args.export, encoding="utf-8").read()
    try:
        export = json.loads(data)
    except json.JSONDecodeError as e:
        ap.error(f"the export is not JSON ({e}); produce it with `lanyard-ca revoked --format json`")
    require_sigv4a()
    import boto3  # only needed for a real run

    client = boto3.client("cloudfront-keyvaluestore", region_name="us-east-1")
    sync(client, args.kvs_arn, export, dt.datetime.now(dt.timezone.utc), args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
