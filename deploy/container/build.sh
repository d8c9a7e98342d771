#!/usr/bin/env bash
# `make container`: the Bento (service + production models) and its OCI image, built with
# `bentoml containerize --backend podman`, without a Docker daemon or a registry.
# Usage: deploy/container/build.sh IMAGE [BENTOML_BIN_DIR]   (from the repository root)
# Prints one JSON line at the end: image, bento, image_bytes, build_seconds.
set -euo pipefail
image=${1:?image tag, e.g. rakuten-classifier:latest}
bin=${2:-.venv/bin}
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac  # absolute: PATH and the venv's tools work from any folder
work=build/container
started=$(date +%s)

# 1. Tools, from Debian's packages, when missing (runc: see 3).
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The base image named in bentofile.yaml, from Debian's packages (no registry is reachable).
base=$(sed -n 's/^ *base_image: *"\{0,1\}\([^"]*\)"\{0,1\}.*/\1/p' bentofile.yaml)
deploy/container/base-image.sh "$base" "$bin/uv"

# 3. Can this machine run a container? Where crun refuses the cgroup layout ("cgroups in hybrid mode
#    not supported") or podman's default rlimits exceed what the sandbox may set, configure podman
#    for this machine: runc, and limits no higher than the host's (a drop-in, said out loud).
if ! podman run --rm "$base" true 2>/dev/null; then
  dropin=/etc/containers/containers.conf.d/50-rakuten-host.conf
  mkdir -p "$(dirname "$dropin")"
  nofile=$(ulimit -Hn)
  cat >"$dropin" <<EOF
# Written by deploy/container/build.sh: podman's defaults cannot start a container on this machine.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
  echo "podman could not start a container with its defaults here: wrote $dropin (runc, host limits)"
  podman run --rm "$base" true || { echo "podman still cannot start a container on this machine" >&2; exit 1; }
fi

# 4. The host's pip configuration, for the build only (mounted into RUN steps, never committed).
rm -rf "$work" && mkdir -p "$work/tmp"
"$bin/python" deploy/container/build_config.py "$work" "$bin/pip"

# 5. The Bento, then the image. BentoML copies the Bento to a temporary build context and refuses
#    a Dockerfile template outside the working directory: keep that context under build/.
bento_build() {
  PATH="$bin:$PATH" "$bin/bentoml" build --output tag "$@" 2>"$work/bentoml-build.log" | sed -n 's/^__tag__://p'
}
tag=$(bento_build)
[ -n "$tag" ] || { tail -1 "$work/bentoml-build.log" >&2; exit 1; }
# bentofile.yaml installs the serving set only (requirements-serving.lock: no torch). A transformer
# text model (model label kind=transformer) is served by torch: only then the Bento installs the
# training set on top (requirements.lock: torch, transformers...), and says so.
text_kind=$("$bin/python" -c 'import sys, bentoml
models = [bentoml.models.get(m.tag).info for m in bentoml.get(sys.argv[1]).info.all_models]
print(*(m.labels["kind"] for m in models if m.tag.name == "rakuten-text"))' "$tag")
if [ "$text_kind" = transformer ]; then
  { cat requirements-serving.lock; grep -v '^-r ' requirements.lock; } >"$work/requirements-with-torch.txt"
  sed "s|^\( *requirements_txt:\).*|\1 \"./$work/requirements-with-torch.txt\"|" bentofile.yaml >"$work/bentofile.yaml"
  "$bin/bentoml" delete -y "$tag" >/dev/null
  tag=$(bento_build -f "$work/bentofile.yaml")
  [ -n "$tag" ] || { tail -1 "$work/bentoml-build.log" >&2; exit 1; }
  echo "the production text model is a transformer: this Bento installs torch (requirements.lock) as well"
fi
echo "built Bento $tag"
TMPDIR="$PWD/$work/tmp" CONTAINERS_CONF="$PWD/$work/containers.conf" \
  "$bin/bentoml" containerize "$tag" --backend podman --image-tag "$image" >"$work/containerize.log" 2>&1 \
  || { tail -20 "$work/containerize.log" >&2; exit 1; }
rm -rf "$work/tmp"
# Also tagged with the project's version: the Kubernetes manifests (deploy/k8s) name that tag.
version=$("$bin/python" -c 'import importlib.metadata as m; print(m.version("rakuten-classifier"))')
podman tag "$image" "${image%:*}:$version"
bytes=$(podman image inspect "$image" --format '{{.Size}}')
echo "{\"image\": \"$image\", \"also_tagged\": \"${image%:*}:$version\", \"bento\": \"$tag\", \"image_bytes\": $bytes, \"build_seconds\": $(($(date +%s) - started))}"
