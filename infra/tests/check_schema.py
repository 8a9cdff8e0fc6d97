"""Checks that every resource type, data source and argument/block name used in infra/
exists in the AWS provider's schema, offline.

`terraform validate` needs the provider from the registry, which the build machines cannot
reach. The Pulumi AWS package (npm `@pulumi/aws`) is generated from the Terraform provider
and carries every resource's arguments and nested blocks in its TypeScript declarations:
`aws:cloudfront/trustStore:TrustStore` is `aws_cloudfront_trust_store`, its `TrustStoreArgs`
lists the arguments (camelCase of the Terraform names), and `types/input.d.ts` the nested
blocks (Terraform's repeated blocks are plural there: `statement` -> `statements`).

Usage: check_schema.py PULUMI_PACKAGE_DIR INFRA_DIR
(`hcl2` is the HCL parser that comes with checkov.)
"""

import pathlib
import re
import sys

import hcl2

# Where Pulumi renamed a Terraform argument (its provider mapping), by resource type.
RENAMED = {
    ("aws_lambda_function", "function_name"): "name",
    ("aws_lambda_function", "filename"): "code",
    ("aws_lambda_permission", "function_name"): "function",
    ("aws_cloudwatch_metric_alarm", "alarm_name"): "name",
}

# Where Pulumi named a resource type differently from the Terraform provider (resources
# only: the data source aws_s3_object is getObject there).
TYPE_RENAMED = {("resource", "aws_s3_object"): "aws_s3_bucket_objectv2"}

META = {"count", "for_each", "depends_on", "lifecycle", "provider", "providers", "timeouts", "connection", "provisioner"}


def camel(s):
    head, *rest = s.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def plural(s):
    if s.endswith("y") and not s.endswith("ey"):
        return s[:-1] + "ies"
    if s.endswith("s"):
        return s + "es"
    return s + "s"


class Schema:
    def __init__(self, pkg):
        self.pkg = pathlib.Path(pkg)
        self.tokens = {}  # terraform name -> (module, file stem, class)
        for js in self.pkg.glob("*/*.js"):
            m = re.search(r"__pulumiType = '([^']+)'", js.read_text(errors="ignore"))
            if m:
                self.add(m.group(1), js)
        for js in [*self.pkg.glob("*/get*.js"), *self.pkg.glob("get*.js")]:
            for m in re.finditer(r'invoke\("([^"]+)"', js.read_text(errors="ignore")):
                self.add(m.group(1), js, data=True)
        self.inputs = (self.pkg / "types" / "input.d.ts").read_text()

    def add(self, token, js, data=False):
        # aws:cloudfront/trustStore:TrustStore -> aws_cloudfront_trust_store
        mod_path, _cls = token.split(":")[1:]
        module, name = mod_path.split("/")
        if data:
            name = name[3:] if name.startswith("get") else name
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        tf = f"aws_{snake}" if module == "index" else f"aws_{module}_{snake}"
        self.tokens[("data" if data else "resource", tf)] = js

    def args(self, kind, tf):
        js = self.tokens.get((kind, TYPE_RENAMED.get((kind, tf), tf)))
        if js is None:
            return None
        dts = js.with_suffix(".d.ts").read_text()
        name = "Args" if kind == "resource" else "Args"
        m = re.search(r"export interface (\w+)" + name + r" \{(.*?)\n\}", dts, re.S)
        if m is None:
            return {}
        return self.fields(m.group(2))

    def fields(self, body):
        out = {}
        for m in re.finditer(r"^\s{4}(\w+)\??: (.*)$", body, re.M):
            t = re.search(r"inputs\.(\w+)\.(\w+)", m.group(2))
            out[m.group(1)] = t.group(2) if t else None
        return out

    def block(self, type_name):
        m = re.search(r"interface " + type_name + r" \{(.*?)\n    \}", self.inputs, re.S)
        if m is None:
            return {}
        out = {}
        for f in re.finditer(r"^\s{8}(\w+)\??: (.*)$", m.group(1), re.M):
            t = re.search(r"inputs\.(\w+)\.(\w+)", f.group(2))
            out[f.group(1)] = t.group(2) if t else None
        return out


def lookup(fields, key):
    for k in (camel(key), plural(camel(key))):
        if k in fields:
            return k
    return None


def check_body(schema, fields, body, where, errors, rtype=None):
    for key, value in body.items():
        key = key.strip('"')
        if key in META or key.startswith("__"):
            continue
        if key == "dynamic":
            for dyn in value:
                for name, spec in dyn.items():
                    name = name.strip('"')
                    k = lookup(fields, name)
                    if k is None:
                        errors.append(f"{where}: unknown block {name!r}")
                        continue
                    inner = spec.get("content", [{}])
                    for c in inner if isinstance(inner, list) else [inner]:
                        check_body(schema, schema.block(fields[k]) if fields[k] else {}, c, f"{where}.{name}", errors)
            continue
        k = lookup(fields, key) or (RENAMED.get((rtype, key)) if RENAMED.get((rtype, key)) in fields else None)
        if k is None:
            errors.append(f"{where}: unknown argument or block {key!r}")
            continue
        nested_type = fields[k]
        blocks = value if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) else None
        if nested_type and blocks:
            for b in blocks:
                check_body(schema, schema.block(nested_type), b, f"{where}.{key}", errors)


def main(pkg, infra):
    schema = Schema(pkg)
    errors = []
    files = sorted(p for p in pathlib.Path(infra).rglob("*.tf") if ".terraform" not in p.parts)
    count = 0
    for tf in files:
        doc = hcl2.load(open(tf))
        for kind in ("resource", "data"):
            for item in doc.get(kind, []):
                for rtype, named in item.items():
                    rtype = rtype.strip('"')
                    for name, body in named.items():
                        count += 1
                        where = f"{tf.relative_to(infra)}: {kind} {rtype}.{name.strip(chr(34))}"
                        fields = schema.args(kind, rtype)
                        if fields is None:
                            errors.append(f"{where}: unknown {kind} type")
                            continue
                        check_body(schema, fields, body, where, errors, rtype)
    for e in errors:
        print(e)
    print(f"checked {count} resources and data sources in {len(files)} files: {len(errors)} unknown names")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
