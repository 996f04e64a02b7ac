#!/usr/bin/env python3
"""Writes the generated reference pages of docs/reference/ from their sources.

  crds.md  from charts/millrace/crds/*.yaml (themselves generated from crds/src by `make crds`)
  rest.md  from the api-server's OpenAPI document (/openapi.json, utoipa, api-server/src/lib.rs)

Usage:
  generate.py crds [--check]
  generate.py rest (--openapi-url URL | --openapi-file FILE) [--check]

`make docs-reference` runs both against the committed YAML and the running platform's API.

--check writes nothing: it exits 1 with a diff when the committed page differs from what the
sources give (the `docs` phase of `make test` runs both checks). Only the standard library and
PyYAML (Debian's python3-yaml, installed by e2e/platform/install-deps.sh) are needed.
"""

import argparse
import difflib
import json
import pathlib
import sys
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CRD_DIR = ROOT / "charts" / "millrace" / "crds"


def cell(text):
    """Text for one Markdown table cell: one line, pipes escaped."""
    if text is None:
        return ""
    return " ".join(str(text).split()).replace("|", "\\|")


def num(value):
    """1.0 as 1: the CRD YAML writes integer bounds as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def code(text):
    return f"`{text}`" if text not in (None, "") else ""


# ---------------------------------------------------------------------------------------------
# CRDs


def schema_type(schema):
    if "x-kubernetes-int-or-string" in schema:
        return "int or string"
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {schema_type(schema.get('items', {})) or 'any'}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        inner = schema["additionalProperties"]
        return f"map of {schema_type(inner) if isinstance(inner, dict) else 'any'}"
    if kind == "" and schema.get("x-kubernetes-preserve-unknown-fields"):
        return "any"
    return kind


BOUNDS = (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"),
          ("maxLength", "max length"), ("minItems", "min items"), ("maxItems", "max items"))


def bounds(schema):
    """A JSON schema's bounds and pattern, as short notes (CRD and OpenAPI alike)."""
    parts = [f"{label} {num(schema[key])}" for key, label in BOUNDS if key in schema]
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    return parts


def constraints(schema):
    parts = bounds(schema)
    if "format" in schema:
        parts.append(f"format {schema['format']}")
    if "enum" in schema:
        parts.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    if schema.get("nullable"):
        parts.append("nullable")
    if schema.get("x-kubernetes-list-type"):
        keys = schema.get("x-kubernetes-list-map-keys")
        parts.append(f"list type {schema['x-kubernetes-list-type']}"
                     + (f" (keys {', '.join(keys)})" if keys else ""))
    return "; ".join(parts)


def crd_fields(schema, path, required, rows):
    """One row per field, depth first, in the schema's (alphabetical) order."""
    default = schema.get("default")
    rows.append((path, schema_type(schema), "yes" if required else "",
                 code(json.dumps(default)) if default is not None else "",
                 constraints(schema), schema.get("description", "")))
    children = schema.get("properties")
    items = schema.get("items")
    if children:
        need = set(schema.get("required", []))
        for name, child in children.items():
            crd_fields(child, f"{path}.{name}", name in need, rows)
    elif isinstance(items, dict) and items.get("properties"):
        need = set(items.get("required", []))
        for name, child in items["properties"].items():
            crd_fields(child, f"{path}[].{name}", name in need, rows)


def crd_rules(schema, path, rules):
    for rule in schema.get("x-kubernetes-validations", []):
        rules.append((path, rule.get("rule", ""), rule.get("message", "")))
    for name, child in (schema.get("properties") or {}).items():
        crd_rules(child, f"{path}.{name}" if path else name, rules)
    items = schema.get("items")
    if isinstance(items, dict):
        crd_rules(items, f"{path}[]", rules)


def render_crd(crd, source):
    spec = crd["spec"]
    names = spec["names"]
    out = [f"## {names['kind']}", ""]
    out.append(f"Source: `{source}`.")
    out.append("")
    out.append("| | |")
    out.append("| --- | --- |")
    out.append(f"| name | `{crd['metadata']['name']}` |")
    out.append(f"| group | `{spec['group']}` |")
    out.append(f"| kind, plural, singular | `{names['kind']}`, `{names['plural']}`, "
               f"`{names.get('singular', '')}` |")
    if names.get("shortNames"):
        out.append(f"| short names | {', '.join(code(n) for n in names['shortNames'])} |")
    out.append(f"| scope | {spec['scope']} |")
    for version in spec["versions"]:
        out.append(f"| version `{version['name']}` | served: {str(version.get('served', True)).lower()}, "
                   f"storage: {str(version.get('storage', True)).lower()} |")
    out.append("")
    for version in spec["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        if len(spec["versions"]) > 1:
            out += [f"### Version {version['name']}", ""]
        sub = version.get("subresources") or {}
        if sub:
            out.append("**Subresources:** " + ", ".join(sorted(sub)) + ".")
            scale = sub.get("scale")
            if scale:
                out.append(f"The scale subresource maps `kubectl scale --replicas` to "
                           f"`{scale.get('specReplicasPath')}`; it reads "
                           f"`{scale.get('statusReplicasPath')}` and the label selector at "
                           f"`{scale.get('labelSelectorPath')}`.")
            out.append("")
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            out += ["**Printer columns** (`kubectl get`; priority 1 only with `-o wide`):", "",
                    "| column | type | JSON path | priority |", "| --- | --- | --- | --- |"]
            for col in columns:
                out.append(f"| {cell(col['name'])} | {col['type']} | `{cell(col['jsonPath'])}` | "
                           f"{col.get('priority', 0)} |")
            out.append("")
        for part in ("spec", "status"):
            schema = root.get("properties", {}).get(part)
            if not schema:
                continue
            rows = []
            need = set(schema.get("required", []))
            for name, child in (schema.get("properties") or {}).items():
                crd_fields(child, f"{part}.{name}", name in need, rows)
            out += [f"**`{part}`**" + (f": {cell(schema.get('description'))}"
                                        if schema.get("description") else ""), "",
                    "| field | type | required | default | constraints | description |",
                    "| --- | --- | --- | --- | --- | --- |"]
            for path, kind, req, default, cons, desc in rows:
                out.append(f"| `{path}` | {cell(kind)} | {req} | {cell(default)} | {cell(cons)} | "
                           f"{cell(desc)} |")
            out.append("")
        rules = []
        crd_rules(root, "", rules)
        if rules:
            out += ["**Validation rules** (CEL, checked by the API server at admission):", "",
                    "| on | rule | message |", "| --- | --- | --- |"]
            for path, rule, message in rules:
                out.append(f"| `{path or '(object)'}` | `{cell(rule)}` | {cell(message)} |")
            out.append("")
    return out


def crds_page():
    try:
        import yaml  # Debian's python3-yaml
    except ImportError:
        sys.exit("generate.py crds needs PyYAML: apt-get install python3-yaml "
                 "(e2e/platform/install-deps.sh installs it)")
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        sys.exit(f"no CRD YAML in {CRD_DIR}")
    out = ["# CRD reference", "",
           "<!-- Generated by `python3 docs/reference/generate.py crds` from charts/millrace/crds/*.yaml;",
           "     do not edit. `bash docs/check.sh` fails when it is stale. -->", "",
           "Every field of the custom resources the chart installs, as their schemas state them.",
           "The schemas are generated from the Rust types in `crds/src/v1alpha1/` by `make crds`.",
           "What the fields do is explained in [stream-jobs.md](../stream-jobs.md) and",
           "[kafka-topics.md](../kafka-topics.md); this page is the exact contract.", ""]
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                out += render_crd(doc, path.relative_to(ROOT))
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# REST


class OpenApi:
    def __init__(self, doc):
        self.doc = doc
        self.schemas = doc.get("components", {}).get("schemas", {})

    def type_of(self, schema):
        """A short type expression with links to component schemas."""
        if not isinstance(schema, dict) or not schema:
            return "any"
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return f"[{name}](#{anchor(name)})"
        for key in ("oneOf", "anyOf"):
            if key in schema:
                parts = [self.type_of(s) for s in schema[key]]
                return " \\| ".join(dict.fromkeys(parts))
        if "allOf" in schema:
            return " & ".join(self.type_of(s) for s in schema["allOf"])
        kind = schema.get("type", "any")
        if isinstance(kind, list):
            return " \\| ".join("null" if k == "null" else self.type_of({**schema, "type": k})
                                for k in kind)
        if kind == "array":
            return f"array of {self.type_of(schema.get('items', {}))}"
        if kind == "object" and "additionalProperties" in schema and not schema.get("properties"):
            inner = schema["additionalProperties"]
            return f"map of {self.type_of(inner) if isinstance(inner, dict) else 'any'}"
        if "enum" in schema:
            return " \\| ".join(code(json.dumps(v) if not isinstance(v, str) else v)
                                for v in schema["enum"])
        if "format" in schema:
            return f"{kind} ({schema['format']})"
        return kind

    def notes(self, schema):
        parts = bounds(schema)
        if "default" in schema:
            parts.append(f"default `{json.dumps(schema['default'])}`")
        return "; ".join(parts)


def anchor(name):
    return "schema-" + "".join(c.lower() if c.isalnum() else "-" for c in name)


def media_schema(content):
    for media, body in (content or {}).items():
        return media, body.get("schema", {})
    return None, None


def render_operation(api, method, path, op, path_params):
    out = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        out += [cell(op["summary"]), ""]
    description = op.get("description", "")
    if description and description.strip() != (op.get("summary") or "").strip():
        out += [description.strip(), ""]
    security = op.get("security", api.doc.get("security"))
    if security is not None:
        names = sorted({name for req in security for name in req}) if security else []
        out += [f"Authentication: {', '.join(code(n) for n in names) if names else 'none'}.", ""]
    params = path_params + op.get("parameters", [])
    if params:
        out += ["| parameter | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
        for p in params:
            out.append(f"| `{p['name']}` | {p['in']} | {api.type_of(p.get('schema', {}))} | "
                       f"{'yes' if p.get('required') else ''} | {cell(p.get('description'))} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        media, schema = media_schema(body.get("content"))
        out += [f"Request body ({code(media)}{', required' if body.get('required') else ''}): "
                f"{api.type_of(schema)}" + (f". {cell(body.get('description'))}" if body.get("description") else ""), ""]
    responses = op.get("responses", {})
    if responses:
        out += ["| status | body | description |", "| --- | --- | --- |"]
        for status, resp in responses.items():
            media, schema = media_schema(resp.get("content"))
            shown = f"{api.type_of(schema)} ({code(media)})" if media else ""
            out.append(f"| {status} | {shown} | {cell(resp.get('description'))} |")
        out.append("")
    return out


def render_schema(api, name, schema):
    out = [f'<a id="{anchor(name)}"></a>', f"### {name}", ""]
    if schema.get("description"):
        out += [schema["description"].strip(), ""]
    props = schema.get("properties")
    if props:
        need = set(schema.get("required", []))
        out += ["| field | type | required | notes | description |", "| --- | --- | --- | --- | --- |"]
        for field, sub in props.items():
            out.append(f"| `{field}` | {api.type_of(sub)} | {'yes' if field in need else ''} | "
                       f"{cell(api.notes(sub))} | {cell(sub.get('description'))} |")
        out.append("")
    else:
        out += [f"Type: {api.type_of(schema)}" + (f"; {api.notes(schema)}" if api.notes(schema) else "") + ".", ""]
    return out


METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


def rest_page(doc):
    api = OpenApi(doc)
    info = doc.get("info", {})
    out = ["# REST reference", "",
           "<!-- Generated by `python3 docs/reference/generate.py rest` from the api-server's",
           "     /openapi.json; do not edit. `bash docs/check.sh` fails when it is stale. -->", "",
           f"{info.get('title', 'The API')} {info.get('version', '')}, OpenAPI {doc.get('openapi', '')}: "
           "every `/v1` route of the api-server, as its OpenAPI document describes it (the document is",
           "generated from the handlers' types with utoipa; a test checks that it covers every route).",
           "Outside the document: `GET /openapi.json` (the document itself), `/docs` (Swagger UI),",
           "`/healthz`, `/readyz` and `/metrics`.",
           "Tenancy, quotas, errors and the other conventions are explained in [api.md](../api.md).", ""]
    if info.get("description"):
        out += [info["description"].strip(), ""]
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if schemes:
        out += ["## Authentication", "", "| scheme | type | description |", "| --- | --- | --- |"]
        for name, s in schemes.items():
            kind = s.get("type", "") + (f" {s['scheme']}" if s.get("scheme") else "")
            out.append(f"| `{name}` | {cell(kind)} | {cell(s.get('description'))} |")
        out.append("")
    out += ["## Routes", "", "| method | path | summary |", "| --- | --- | --- |"]
    paths = doc.get("paths", {})
    for path in sorted(paths):
        for method in METHODS:
            if method in paths[path]:
                op = paths[path][method]
                out.append(f"| {method.upper()} | `{path}` | {cell(op.get('summary'))} |")
    out.append("")
    by_tag = {}
    for path in sorted(paths):
        item = paths[path]
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, item[method], item.get("parameters", [])))
    for tag in sorted(by_tag):
        out += [f"## {tag}", ""]
        for method, path, op, path_params in by_tag[tag]:
            out += render_operation(api, method, path, op, path_params)
    if api.schemas:
        out += ["## Schemas", ""]
        for name in sorted(api.schemas):
            out += render_schema(api, name, api.schemas[name])
    return "\n".join(out).rstrip() + "\n"


def load_openapi(args):
    if args.openapi_file:
        return json.loads(pathlib.Path(args.openapi_file).read_text())
    with urllib.request.urlopen(args.openapi_url, timeout=30) as reply:
        return json.loads(reply.read())


# ---------------------------------------------------------------------------------------------


def write_or_check(target, text, check, regenerate):
    if not check:
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT)}")
        return 0
    current = target.read_text() if target.exists() else ""
    if current == text:
        print(f"{target.relative_to(ROOT)} is current")
        return 0
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "committed", "generated", lineterm="")
    print("\n".join(list(diff)[:80]))
    print(f"error: {target.relative_to(ROOT)} is stale: run `{regenerate}` and commit it", file=sys.stderr)
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="page", required=True)
    crds = sub.add_parser("crds")
    crds.add_argument("--check", action="store_true")
    rest = sub.add_parser("rest")
    source = rest.add_mutually_exclusive_group(required=True)
    source.add_argument("--openapi-url")
    source.add_argument("--openapi-file")
    rest.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.page == "crds":
        return write_or_check(HERE / "crds.md", crds_page(), args.check, "make docs-reference")
    return write_or_check(HERE / "rest.md", rest_page(load_openapi(args)), args.check, "make docs-reference")


if __name__ == "__main__":
    sys.exit(main())
