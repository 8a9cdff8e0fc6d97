"""pytest: the KeyValueStore sync plan, and the bundle preconditions on real bundles."""

import datetime as dt
import importlib.util
import json
import os
import pathlib
import subprocess
import tempfile

import pytest

HERE = pathlib.Path(__file__).parent
spec = importlib.util.spec_from_file_location("sync", HERE.parent / "scripts" / "sync-revocations.py")
sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync)
import bundle_check  # noqa: E402

NOW = dt.datetime(2026, 6, 2, tzinfo=dt.timezone.utc)


def row(serial, expired=False):
    return {
        "serial": serial,
        "revoked_at": "2026-06-01T00:00:00Z",
        "reason": "keyCompromise",
        "not_after": "2026-01-01T00:00:00Z" if expired else "2027-01-01T00:00:00Z",
    }


class FakeKvs:
    """Enough of the cloudfront-keyvaluestore client for the sync: pages, ETags, limits."""

    def __init__(self, items=None):
        self.items = dict(items or {})
        self.etag = "e0"
        self.calls = 0

    def list_keys(self, KvsARN, NextToken=None):
        keys = sorted(self.items)
        start = int(NextToken or 0)
        page = keys[start : start + 7]
        resp = {"Items": [{"Key": k, "Value": self.items[k]} for k in page]}
        if start + 7 < len(keys):
            resp["NextToken"] = str(start + 7)
        return resp

    def describe_key_value_store(self, KvsARN):
        return {"ETag": self.etag}

    def update_keys(self, KvsARN, IfMatch, Puts, Deletes):
        assert IfMatch == self.etag, "stale ETag"
        assert len(Puts) + len(Deletes) <= 50, "more than 50 keys in one update"
        for p in Puts:
            self.items[p["Key"]] = p["Value"]
        for d in Deletes:
            del self.items[d["Key"]]
        self.calls += 1
        self.etag = f"e{self.calls}"
        return {"ETag": self.etag}


def test_canonical_serial_forms():
    assert sync.canonical("8F:3A:01") == "00:8f:3a:01"
    assert sync.canonical("00:8f:3a:01") == "00:8f:3a:01"
    assert sync.canonical("0x7f01") == "7f:01"
    assert sync.canonical("00007f01") == "7f:01"


def test_sync_is_idempotent_drops_expired_and_batches():
    export = [row(f"7f:{i:02x}") for i in range(120)] + [row("7e:00", expired=True)]
    kvs = FakeKvs({"6e:01": "{}", "7e:00": "{}"})
    sync.sync(kvs, "arn", export, NOW, out=open(os.devnull, "w"))
    assert set(kvs.items) == {f"7f:{i:02x}" for i in range(120)}
    assert kvs.calls == 3  # 122 changes, 50 per update
    calls = kvs.calls
    puts, deletes = sync.sync(kvs, "arn", export, NOW, out=open(os.devnull, "w"))
    assert (puts, deletes) == ([], []) and kvs.calls == calls


def test_dry_run_changes_nothing():
    kvs = FakeKvs()
    puts, _ = sync.sync(kvs, "arn", [row("7f:01")], NOW, dry_run=True, out=open(os.devnull, "w"))
    assert puts and not kvs.items


def test_value_names_the_reason():
    want = sync.desired([row("7f:01")], NOW)
    assert json.loads(want["7f:01"])["reason"] == "keyCompromise"


def make_bundle(dirpath):
    def run(*args):
        subprocess.run(args, cwd=dirpath, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
        "-keyout", "root.key", "-out", "root.pem", "-subj", "/CN=Test Root", "-days", "30")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "iss.key", "-out", "iss.csr", "-subj", "/CN=Test Issuing")
    pathlib.Path(dirpath, "ext").write_text("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
    run("openssl", "x509", "-req", "-in", "iss.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
        "-out", "iss.pem", "-days", "30", "-extfile", "ext")
    text = "# Test bundle\n" + pathlib.Path(dirpath, "root.pem").read_text() + pathlib.Path(dirpath, "iss.pem").read_text()
    return text


def test_the_ca_bundle_passes_the_module_precondition():
    path = os.environ.get("LANYARD_CA_BUNDLE")
    if path:
        text = pathlib.Path(path).read_text()
    else:
        with tempfile.TemporaryDirectory() as d:
            text = make_bundle(d)
    assert bundle_check.violations(text) == []


def test_bad_bundles_are_refused():
    with tempfile.TemporaryDirectory() as d:
        text = make_bundle(d)
    blocks = text.split("-----END CERTIFICATE-----\n")
    with_blank = blocks[0] + "-----END CERTIFICATE-----\n\n" + blocks[1] + "-----END CERTIFICATE-----\n"
    assert "blank line between certificates" in bundle_check.violations(with_blank)
    assert any("certificates" in v for v in bundle_check.violations(text.split("-----BEGIN")[0] + ("-----BEGIN" + text.split("-----BEGIN")[1]) * 26))
    with_key = text + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    assert "blocks other than CERTIFICATE" in bundle_check.violations(with_key)
    assert "over 65,536 bytes" in bundle_check.violations(text + "#" * 70000)


@pytest.mark.skipif(not os.environ.get("LANYARD_PULUMI_PKG"), reason="run.sh provides the provider schema package")
def test_schema_check_catches_unknown_names(tmp_path):
    (tmp_path / "main.tf").write_text(
        'resource "aws_cloudfront_trust_store" "x" {\n  name = "a"\n  bogus_arg = 1\n}\n'
        'resource "aws_made_up" "y" {}\n'
    )
    r = subprocess.run(
        ["python3", str(HERE / "check_schema.py"), os.environ["LANYARD_PULUMI_PKG"], str(tmp_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 1
    assert "bogus_arg" in r.stdout and "aws_made_up" in r.stdout


MODULES = HERE.parent / "modules"


def test_bucket_prefixes_fit_s3s_limit_for_every_allowed_name():
    """S3's bucket_prefix is at most 37 characters; every module name that passes the
    variable's validation must leave room for each prefix's suffix."""
    import re

    for module in MODULES.iterdir():
        main = (module / "main.tf").read_text()
        prefixes = re.findall(r'bucket_prefix\s*=\s*"\$\{var\.name\}([^"]*)"', main)
        if not prefixes:
            continue
        variables = (module / "variables.tf").read_text()
        block = variables[variables.index('variable "name"') :]
        pattern = re.search(r'regex\("(.*?)", var\.name\)', block).group(1).replace("\\\\", "\\")
        longest = max(n for n in range(1, 80) if re.fullmatch(pattern, "a" * n))
        for suffix in prefixes:
            assert longest + len(suffix) <= 37, f"{module.name}: a {longest}-character name + {suffix!r}"


def test_modules_with_trust_stores_need_the_provider_that_has_them():
    """aws_cloudfront_trust_store, connection functions and viewer_mtls_config exist from
    hashicorp/aws 6.28 on."""
    import re

    roots = list(MODULES.iterdir()) + list((HERE.parent / "examples").iterdir())
    for root in roots:
        text = "".join(p.read_text() for p in root.glob("*.tf"))
        uses = 'resource "aws_cloudfront_trust_store"' in text or "modules/cloudfront-mtls" in text
        if not uses:
            continue
        version = re.search(r'source\s*=\s*"hashicorp/aws"\s*version\s*=\s*">=\s*([0-9.]+)', text).group(1)
        assert tuple(int(x) for x in version.split(".")) >= (6, 28), f"{root.name}: aws >= {version}"


def test_only_the_publisher_may_sign_with_the_root_key():
    """The internet-facing handler issues with the issuing key; the root key (the root CRL)
    is the scheduled publisher's alone, in the key policy and in the roles' policies, which
    both follow local.signers."""
    import re

    main = (MODULES / "serverless-ca" / "main.tf").read_text()
    signers = re.search(r"signers = \{(.*?)\}", main, re.S).group(1)
    table = dict(re.findall(r'(\w+)\s*=\s*\[([^\]]*)\]', signers))
    assert table["root"].replace(" ", "") == '"publish"', table
    assert "http" in table["issuing"] and "publish" in table["issuing"], table
    assert 'signing_key["root"].json' in main and 'signing_key["issuing"].json' in main
    assert "for f in each.value : aws_iam_role.lambda[f].arn" in main
    assert "if contains(fs, each.key)" in main, "the roles' Sign statement must follow local.signers"


def test_a_run_without_the_aws_crt_says_what_to_install(monkeypatch, tmp_path):
    """SigV4A needs botocore[crt]; without it the script stops before any request and names
    the package."""
    import builtins

    real_import = builtins.__import__

    def no_crt(name, *args, **kwargs):
        if name == "awscrt":
            raise ImportError("No module named 'awscrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crt)
    export = tmp_path / "revoked.json"
    export.write_text("[]")
    with pytest.raises(SystemExit) as e:
        sync.main(["--kvs-arn", "arn:aws:cloudfront::1:key-value-store/x", str(export)])
    assert "botocore[crt]" in str(e.value)


def test_every_module_variable_is_used():
    """A variable the module never reads is a setting that silently does nothing."""
    import re

    for module in MODULES.iterdir():
        variables = (module / "variables.tf").read_text()
        body = "".join(p.read_text() for p in module.glob("*.tf") if p.name != "variables.tf")
        for name in re.findall(r'^variable "(\w+)"', variables, re.M):
            assert re.search(rf"var\.{name}\b", body), f"{module.name}: var.{name} is never used"


def test_the_mtls_domain_waits_for_the_bundle():
    """API Gateway reads a custom domain's mTLS trust store when it creates the domain; the
    bundle is written by `lanyard-ca init` after the first apply. The renewal domain and its
    mapping exist only once truststore_version is set (the second apply)."""
    import re

    main = (MODULES / "serverless-ca" / "main.tf").read_text()
    for kind in ("aws_apigatewayv2_domain_name", "aws_apigatewayv2_api_mapping"):
        block = re.search(rf'resource "{kind}" "renewal" \{{(.*?)\n\}}', main, re.S).group(1)
        assert re.search(r"count\s*=\s*var\.truststore_version == null \? 0 : 1", block), kind
    variables = (MODULES / "serverless-ca" / "variables.tf").read_text()
    block = variables[variables.index('variable "truststore_version"') :]
    assert re.search(r"default\s*=\s*null", block.split("}")[0])


def test_examples_give_each_module_what_it_declares():
    """Offline stand-in for `terraform validate` of the module calls (the provider registry
    is out of reach): every argument an example passes is a variable of the module, and
    every variable without a default is passed."""
    import hcl2

    meta = {"source", "providers", "count", "for_each", "depends_on", "version", "__start_line__", "__end_line__"}
    for example in (HERE.parent / "examples").iterdir():
        for tf in example.glob("*.tf"):
            with open(tf) as f:
                doc = hcl2.load(f)
            for block in doc.get("module", []):
                for name, args in block.items():
                    source = args["source"]
                    source = source[0] if isinstance(source, list) else source
                    module = (example / source).resolve()
                    declared = {}
                    with open(module / "variables.tf") as f:
                        for v in hcl2.load(f).get("variable", []):
                            for vname, body in v.items():
                                declared[vname] = "default" in body
                    given = set(args) - meta
                    unknown = given - set(declared)
                    assert not unknown, f"{example.name}: module {name} has no variable {unknown}"
                    missing = {v for v, has_default in declared.items() if not has_default} - given
                    assert not missing, f"{example.name}: module {name} needs {missing}"


def test_ca_keys_come_in_generations_and_old_deployments_keep_theirs():
    """A rotation needs the next generation's KMS key made (and signable by the CA's roles)
    before `lanyard-ca ca rotate-*`; retired generations keep signing their CRLs and OCSP
    answers, so every generation's ARN is in the Sign statement. A deployment from before
    generations keeps its single keys as generation 1 (moved blocks), rather than Terraform
    destroying the CA's keys."""
    import hcl2

    with open(MODULES / "serverless-ca" / "main.tf") as f:
        doc = hcl2.load(f)
    import re

    def one(v):  # this hcl2 gives attributes as one-element lists
        return v[0] if isinstance(v, list) else v

    keys = {name: body for r in doc["resource"] for kind, v in r.items() if kind == "aws_kms_key" for name, body in v.items()}
    for role in ("root", "issuing"):
        assert one(keys[role]["for_each"]) == f"${{local.generations.{role}}}", keys[role]["for_each"]
    moved = {(one(m["from"]), one(m["to"])) for m in doc.get("moved", [])}
    for kind in ("aws_kms_key", "aws_kms_alias"):
        for role in ("root", "issuing"):
            assert (f"${{{kind}.{role}}}", f'${{{kind}.{role}["1"]}}') in moved, (kind, role, moved)
    main = (MODULES / "serverless-ca" / "main.tf").read_text()
    assert "signing_arns[k] if contains(fs, each.key)" in main
    for role in ("root", "issuing"):
        assert re.search(rf"{role}\s*=\s*\[for k in aws_kms_key\.{role} : k\.arn\]", main), role
    variables = (MODULES / "serverless-ca" / "variables.tf").read_text()
    for role in ("root", "issuing"):
        block = variables[variables.index(f'variable "{role}_generations"') :].split("\n}\n")[0]
        assert "default     = [1]" in block, block
