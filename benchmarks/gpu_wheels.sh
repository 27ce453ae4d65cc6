#!/usr/bin/env bash
# Build the wheel set the GPU machine needs for benchmarks/gpu_engine.py, and check it fits.
#
#   bash benchmarks/gpu_wheels.sh [DIR]        # default DIR: .gpu-wheels (git-ignored)
#
# The machine has Python 3.12, torch 2.11 (CUDA 13) and the packages in gpu_image_packages.txt, and
# no network; everything else the benchmark imports travels as the wheels listed in gpu_wheels.txt,
# at their uv.lock versions, for cp312 manylinux x86_64, from PyPI. The script fails loudly when a
# wheel is missing, when a carried wheel needs a package that is neither carried nor on the image,
# or when the wheels exceed 64 MiB, alone or together with the rest of the tree that travels
# (tracked and untracked-not-ignored files).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.gpu-wheels}"
limit=$((64 * 1024 * 1024))

pins=$(python3 - <<'PY'
import re, tomllib
lock = {p["name"]: p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"]}
for line in open("benchmarks/gpu_wheels.txt"):
    spec = line.split("#")[0].strip()
    if not spec:
        continue
    if "==" in spec:
        print(spec)
    elif spec in lock:
        print(f"{spec}=={lock[spec]}")
    else:
        raise SystemExit(f"gpu_wheels.txt: {spec} has no version in uv.lock; pin it there as NAME==VERSION")
PY
)
echo "wheels for cp312 manylinux x86_64 into $dir: ${pins//$'\n'/ }"
rm -rf "$dir"
mkdir -p "$dir"
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# shellcheck disable=SC2086
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 "${platforms[@]}" -d "$dir" $pins

python3 - "$dir" "$limit" <<'PY'
import re, subprocess, sys, zipfile
from pathlib import Path
from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement

folder, limit = Path(sys.argv[1]), int(sys.argv[2])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def names(path):
    lines = (l.split("#")[0].strip() for l in open(path))
    return {norm(re.split(r"[=<>\s]", l)[0]) for l in lines if l}
image = names("benchmarks/gpu_image_packages.txt")
wanted = names("benchmarks/gpu_wheels.txt")
wheels = sorted(folder.glob("*.whl"))
got = {}
for w in wheels:
    got.setdefault(norm(w.name.split("-")[0]), []).append(w.name)
problems = [f"no wheel for {n}" for n in sorted(wanted - set(got))]
problems += [f"two versions of {n}: {v}" for n, v in got.items() if len(v) > 1]
# Needs of the carried wheels, as pip would evaluate them on the GPU machine (no extras).
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
       "platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux",
       "implementation_name": "cpython", "extra": ""}
# indextts2-inference names nemo-text-processing for text normalisation, which the benchmark keeps
# out of the measured path (fixed token ids), so it is deliberately not carried.
deliberately_absent = {"nemo-text-processing"}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            n = norm(req.name)
            if n not in image and n not in got and n not in deliberately_absent:
                problems.append(f"{w.name} needs {req} : neither carried nor on the image")
size = sum(w.stat().st_size for w in wheels)
tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                      capture_output=True, check=True).stdout.split(b"\0")
tree_size = sum(Path(p.decode()).stat().st_size for p in tree if p and Path(p.decode()).is_file())
mib = lambda b: f"{b / 2**20:.1f} MiB"
for w in wheels:
    print(f"  {w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
print(f"wheel set: {len(wheels)} wheels, {mib(size)}; tree that travels besides: {mib(tree_size)}; "
      f"together {mib(size + tree_size)} of {mib(limit)}")
if size + tree_size > limit:
    problems.append(f"wheels + tree = {mib(size + tree_size)} > {mib(limit)}")
if problems:
    print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("ok")
PY
