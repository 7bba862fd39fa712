"""Physics benchmark, side by side in one run: DRR throughput against the ``diffdrr`` package on the same real CT and
detector, MRI simulation time against the bare FFTs it performs, and the realism of a simulated T1w image.

1. DRRs. The real head CT of Debian ``invesalius-examples`` (256 x 256 x 108 int16 HU, 0.957 x 0.957 x 1.5 mm) is
   rendered at the same detector size (``--det``, default 128 x 128), source-to-detector distance and pixel pitch,
   for a batch of poses, by
   * ours, ``physics.xray.DRR.line_integrals`` with Joseph's projector (one bilinear sample per voxel plane, 2D
     kernel; two material channels), the same with the trilinear projector at ``--samples`` points per ray, and the
     full Joseph forward (polychromatic Beer-Lambert over 28 energy bins);
   * diffdrr's ``DRR`` with its default exact Siddon renderer, and with its trilinear renderer at the same number
     of samples per ray (one density channel: diffdrr renders density, not two materials).
   Both run in ``torch.inference_mode`` with the same thread count, after one warm-up call; DRRs/s is the median
   of ``--repeats`` alternating rounds. The ratio is ours / theirs (above 1: ours is faster). The accuracy of the
   Joseph projector is reported beside it: its relative L1 difference to our trilinear projector at 4x the samples.
2. MRI. ``MRIScanner`` forward (tissue mix, coil sensitivities, centred FFT, noise at an SNR, undersampling mask,
   inverse FFT, root-sum-of-squares) of a batch of 256 x 256 slices with 8 coils at 2x undersampling, image only
   and with the centred k-space returned too, against the bare ``torch.fft.fft2`` + ``torch.fft.ifft2`` of the
   same (B, C, H, W) complex64 array (whole array, and slice by slice as the scanner runs on the CPU), and, for the
   image alone, against the bare pruned transforms it needs at that undersampling (``pruned_ffts``). Time ratio =
   ours / anchor (goal <= 1.25); the headline is the strictest (largest) of each row.
3. Realism. Pearson r in the brain mask between T1-weighted images simulated from the MNI152 GM/WM maps (1 mm, the
   full volume) and the real MNI152 T1 template, for three T1-weighted protocols.

    .venv/bin/python bench/physics.py            # ~2 minutes on 2 cores; writes bench/results/physics.json
    .venv/bin/python bench/physics.py --quick    # smoke check, writes to the temp folder
    .venv/bin/python bench/physics.py --only mri # one section; updates only its key in physics.json
    bench/gpu_physics.sh                         # CUDA: DRRs/s at 256 x 256 (fp32 / fp16 / bf16 / compile), MRI slices/s
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from physics import mri  # noqa: E402
from physics.phantoms import INVESALIUS, brain_tissues, load_invesalius, load_mni152  # noqa: E402
from physics.xray import DRR, Detector, Pose  # noqa: E402
from scarce.io import write_json  # noqa: E402

SDD, SOD = 1000.0, 700.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def alternating(fns: dict, n_items: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Items/s of each function: one warm-up call each, then ``repeats`` rounds in alternating order (so no side
    always runs on a warm cache); the median time per function."""
    for fn in fns.values():
        fn()
    sync(device)
    rounds = {k: [] for k in fns}
    for i in range(repeats):
        for name in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            fns[name]()
            sync(device)
            rounds[name].append(time.perf_counter() - t)
    return {k: n_items / statistics.median(v) for k, v in rounds.items()}


def poses(b: int, device) -> Pose:
    g = torch.Generator().manual_seed(0)
    rot = (torch.rand(b, 3, generator=g) - 0.5) * torch.tensor([0.2, 0.2, 1.0])
    return Pose(rot.to(device), torch.zeros(b, 3, device=device))


def diffdrr_module(hu: np.ndarray, spacing, det: Detector, renderer: str, device):
    """diffdrr's DRR of the same volume and detector (its AP frame; the pose is its own convention)."""
    from diffdrr.data import read
    from diffdrr.drr import DRR as DiffDRR
    from torchio import ScalarImage

    img = ScalarImage(tensor=torch.from_numpy(hu)[None].float(), affine=np.diag([*spacing, 1.0]))
    subject = read(img, orientation="AP")
    return DiffDRR(subject, sdd=det.sdd_mm, height=det.height, delx=det.pixel_mm, renderer=renderer).to(device)


def diffdrr_pose(b: int, device):
    from diffdrr.pose import convert

    g = torch.Generator().manual_seed(0)
    rot = (torch.rand(b, 3, generator=g) - 0.5) * torch.tensor([1.0, 0.2, 0.2])
    trans = torch.tensor([[0.0, SOD, 0.0]]).expand(b, 3)
    return convert(rot.to(device), trans.to(device), parameterization="euler_angles", convention="ZXY")


def bench_drr(args, device) -> dict:
    ct = load_invesalius(args.ct)
    hu, spacing = ct["hu"].data, ct["hu"].spacing_mm
    extent = max(n * s for n, s in zip(hu.shape, spacing))
    det = Detector(SDD, SOD, args.det, args.det, 1.1 * extent * SDD / SOD / args.det)
    ours = DRR(torch.from_numpy(hu), spacing, det).to(device)
    tri = DRR(torch.from_numpy(hu), spacing, det, n_samples=args.samples, method="trilinear").to(device)
    pose = poses(args.batch, device)
    out = {"ct": {"path": args.ct, "shape": list(hu.shape), "spacing_mm": list(spacing)},
           "detector": {"height": det.height, "width": det.width, "pixel_mm": det.pixel_mm, "sdd_mm": SDD,
                        "sod_mm": SOD}, "batch": args.batch, "samples_per_ray": args.samples, "drrs_per_s": {}}
    r = out["drrs_per_s"]
    with torch.inference_mode():
        fns = {"scarce joseph line integrals": lambda: ours.line_integrals(pose),
               "scarce trilinear line integrals": lambda: tri.line_integrals(pose),
               "scarce joseph polychromatic": lambda: ours(pose)}
        try:
            theirs = {"diffdrr siddon": diffdrr_module(hu, spacing, det, "siddon", device),
                      "diffdrr trilinear": diffdrr_module(hu, spacing, det, "trilinear", device)}
            dpose = diffdrr_pose(args.batch, device)
            fns["diffdrr siddon"] = lambda: theirs["diffdrr siddon"](dpose)
            fns["diffdrr trilinear"] = lambda: theirs["diffdrr trilinear"](dpose, n_points=args.samples)
            import diffdrr

            out["diffdrr_version"] = diffdrr.__version__
        except ImportError as e:
            out["diffdrr_version"] = f"not installed ({e}); pip install -e '.[bench]'"
        r.update(alternating(fns, args.batch, args.repeats, device))
        dense = DRR(torch.from_numpy(hu), spacing, det, n_samples=4 * args.samples, method="trilinear").to(device)
        a, b = ours.line_integrals(pose)[:, :2], dense.line_integrals(pose)[:, :2]
        out["joseph_vs_dense_trilinear_rel_l1"] = {m: float((a[:, i] - b[:, i]).abs().sum() / b[:, i].abs().sum())
                                                   for i, m in enumerate(("water", "bone"))}
    if "diffdrr trilinear" in r:
        out["ratios"] = {"joseph / diffdrr siddon (its default)": r["scarce joseph line integrals"]
                         / r["diffdrr siddon"],
                         "joseph / diffdrr trilinear": r["scarce joseph line integrals"] / r["diffdrr trilinear"],
                         "trilinear / diffdrr trilinear (same samples)": r["scarce trilinear line integrals"]
                         / r["diffdrr trilinear"],
                         "joseph polychromatic / diffdrr siddon": r["scarce joseph polychromatic"]
                         / r["diffdrr siddon"]}
    return out


def pruned_ffts(x: torch.Tensor, xa: torch.Tensor, per_slice: bool) -> None:
    """The bare transforms MRIScanner.acquire performs for an undersampled image without k-space, nothing else:
    fft and ifft along W of the whole (B, C, H, W) array ``x`` and ifft along H of the noise on the acquired
    columns ``xa`` (B, C, H, W_acquired)."""
    for s in range(x.shape[0]) if per_slice else (slice(None),):
        torch.fft.fft(x[s], dim=-1, norm="ortho")
        torch.fft.ifft(xa[s], dim=-2, norm="ortho")
        torch.fft.ifft(x[s], dim=-1, norm="ortho")


def bench_mri(args, device) -> dict:
    """MRIScanner against its anchors (slices/s, median of alternating rounds): the bare fft2 + ifft2 of the whole
    (B, C, H, W) array (the issue's anchor) and the same slice by slice (the scanner works slice by slice on the
    CPU, where that keeps arrays in cache: a stricter anchor); for the image alone, which prunes the H-transforms
    at this undersampling, also the bare pruned transforms (pruned_ffts, slice by slice on the CPU). With k-space
    the scanner does the full fft2 + ifft2, so the slice-by-slice pair is its same-transforms anchor. The headline
    ratio is the largest (strictest) of each row."""
    b, c, n, acc = args.mri_batch, 8, args.mri_size, 2.0
    g = torch.Generator().manual_seed(0)
    fr = torch.rand(b, 3, n, n, generator=g)
    fr = fr / fr.sum(1, keepdim=True)
    sc = mri.MRIScanner(fr, spacing_mm=1.0, field_t=3.0, n_coils=c).to(device)
    t = lambda v: torch.full((b,), float(v), device=device)
    p = mri.MRIProtocol(t(1), t(20), t(4), t(0), t(25))
    idx = torch.arange(b, device=device)
    snr = t(30)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, c, n, n, dtype=torch.complex64, device=device)
    n_acq = int(mri.cartesian_mask(n, acc, 0.08, generator=torch.Generator().manual_seed(0)).sum())
    xa = torch.randn(b, c, n, n_acq, dtype=torch.complex64, device=device)
    per_slice = device.type == "cpu"
    with torch.inference_mode():
        fns = {"scarce MRIScanner (image)": lambda: sc(idx, p, snr=snr, acceleration=acc, generator=gen,
                                                       return_kspace=False),
               "scarce MRIScanner (image + k-space)": lambda: sc(idx, p, snr=snr, acceleration=acc, generator=gen),
               "bare fft2 + ifft2": lambda: torch.fft.ifft2(torch.fft.fft2(x, norm="ortho"), norm="ortho"),
               "bare fft2 + ifft2, slice by slice": lambda: [torch.fft.ifft2(torch.fft.fft2(x[i], norm="ortho"),
                                                                             norm="ortho") for i in range(b)],
               "bare pruned FFTs (image)": lambda: pruned_ffts(x, xa, per_slice)}
        sps = alternating(fns, b, max(args.repeats, 25), device)
    ours = {"image": sps["scarce MRIScanner (image)"], "image + k-space": sps["scarce MRIScanner (image + k-space)"]}
    ratios = {}
    for what, v in ours.items():
        ratios[what] = r = {"vs bare fft2 + ifft2 (whole array)": sps["bare fft2 + ifft2"] / v,
                            "vs bare fft2 + ifft2 (slice by slice)": sps["bare fft2 + ifft2, slice by slice"] / v}
        if what == "image":
            r["vs bare pruned FFTs (slice by slice)"] = sps["bare pruned FFTs (image)"] / v
        r["headline (strictest)"] = max(r.values())
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "batch": b, "coils": c,
            "size": n, "acceleration": acc, "acquired_lines": n_acq, "snr": 30.0,
            "pruned_ffts": "fft_W + ifft_W of the whole (B, C, H, W) array, ifft_H of (B, C, H, acquired_lines)",
            "slices_per_s": sps,
            "time_ratios_ours_over_anchor": ratios, "goal": "<= 1.25",
            "time_ratio_ours_over_bare": ratios["image"]["vs bare fft2 + ifft2 (whole array)"],
            "time_ratio_with_kspace_over_bare": ratios["image + k-space"]["vs bare fft2 + ifft2 (whole array)"]}


def realism() -> dict:
    m = load_mni152()
    fr, mask = brain_tissues(m["gm"].data, m["wm"].data)
    tab = mri.relaxation_table(3.0, ("csf", "gm", "wm")).double()
    out = {}
    for name, (seq, tr, te, ti, fl) in {"spoiled GRE TR 20 TE 4 flip 25": (1, 20, 4, 0, 25),
                                        "spin echo TR 500 TE 15": (0, 500, 15, 0, 90),
                                        "MPRAGE-like IR TR 2300 TI 1000 TE 3": (2, 2300, 3, 1000, 9),
                                        "MPRAGE-like IR TR 2300 TI 900 TE 3": (2, 2300, 3, 900, 9)}.items():
        p = mri.MRIProtocol(*(torch.tensor([float(v)]) for v in (seq, tr, te, ti, fl)))
        img = mri.tissue_image(torch.from_numpy(fr)[None].double(), p, tab)[0].numpy()
        out[name] = float(np.corrcoef(img[mask], m["t1"].data[mask])[0, 1])
    return {"pearson_r_in_brain_mask": out, "mask_voxels": int(mask.sum()), "field_t": 3.0,
            "anatomy": "MNI152 2009a sym GM/WM (nilearn), CSF = brain mask - GM - WM; real: MNI152 T1 template"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", default=str(INVESALIUS))
    ap.add_argument("--det", type=int, default=128)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--mri-batch", type=int, default=8)
    ap.add_argument("--mri-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["drr", "mri", "realism"], default=None,
                    help="run one CPU section and update only its key in the results file")
    ap.add_argument("--gpu", action="store_true", help="the GPU section (DRRs/s at 256 x 256 by precision)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --gpu, else cpu)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = torch.device(a.device or ("cuda" if a.gpu else "cpu"))
    if a.quick and not a.gpu:
        a.det, a.samples, a.batch, a.repeats, a.mri_batch, a.mri_size = 32, 64, 2, 2, 2, 64
    res = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "device": str(device)}
    out = a.out or (Path(tempfile.gettempdir()) / "physics_quick.json" if a.quick else
                    ROOT / "bench" / "results" / ("physics_gpu.json" if a.gpu else "physics.json"))
    if a.gpu:
        res["gpu"] = gpu_section(a, device)
    elif a.only:
        if Path(out).exists():  # keep the other sections of the last full run
            res = {**json.loads(Path(out).read_text()), **{k: v for k, v in res.items() if k != "when"}}
        res[a.only] = {"drr": lambda: bench_drr(a, device), "mri": lambda: bench_mri(a, device),
                       "realism": realism}[a.only]()
    else:
        res["drr"] = bench_drr(a, device)
        res["mri"] = bench_mri(a, device)
        if not a.quick:
            res["realism"] = realism()
    write_json(out, res)
    print_table(res)
    print("wrote", out)


def gpu_section(a, device) -> dict:
    """DRRs/s at 256 x 256 from the real CT (Joseph projector; fp32, fp16, bf16 planes, each also compiled) with each
    variant's relative L1 difference to fp32, and MRI slices/s at 256 x 256 with 8 coils."""
    ct = load_invesalius(a.ct)
    hu, spacing = ct["hu"].data, ct["hu"].spacing_mm
    size = 32 if a.quick else 256
    extent = max(n * s for n, s in zip(hu.shape, spacing))
    det = Detector(SDD, SOD, size, size, 1.1 * extent * SDD / SOD / size)
    out = {"device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "detector": [size, size],
           "method": "joseph", "drrs_per_s": {}, "rel_l1_vs_fp32": {}}
    base = DRR(torch.from_numpy(hu), spacing, det, chunk_rays=1 << 20).to(device)
    for batch in ((2,) if a.quick else (16, 64)):
        pose = poses(batch, device)
        with torch.inference_mode():
            ref = base.line_integrals(pose)
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            drr = DRR(torch.from_numpy(hu), spacing, det, chunk_rays=1 << 20).to(device)
            for k in ("planes_x", "planes_y", "planes_z"):  # the volume in low precision; coordinates stay fp32
                setattr(drr, k, getattr(drr, k).to(dtype))
            for comp in ((False, True) if device.type == "cuda" else (False,)):  # compile pays on CUDA only
                key = f"{name}{'+compile' if comp else ''} batch {batch}"
                fn = torch.compile(drr.line_integrals) if comp else drr.line_integrals
                try:
                    with torch.inference_mode():
                        out["drrs_per_s"][key] = alternating({key: lambda: fn(pose)}, batch, a.repeats, device)[key]
                        img = fn(pose)
                    out["rel_l1_vs_fp32"][key] = float((img.float() - ref).abs().sum() / ref.abs().sum())
                except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
                    out["drrs_per_s"][key] = f"failed: {type(e).__name__}: {e}"
    a.mri_batch, a.mri_size = (2, 64) if a.quick else (64, 256)
    out["mri"] = bench_mri(a, device)
    return out


def print_mri(m: dict) -> None:
    print(f"\nMRI {m['batch']} slices {m['size']}x{m['size']}, {m['coils']} coils, {m['acceleration']:g}x "
          f"undersampling ({m['acquired_lines']} lines), SNR {m.get('snr', 30):g}; slices/s:")
    for k, v in m["slices_per_s"].items():
        print(f"  {k:<40} {v:8.1f}")
    for what, r in m.get("time_ratios_ours_over_anchor", {}).items():
        print(f"  time ratio ours ({what}) / anchor, goal {m.get('goal', '<= 1.25')}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))


def print_table(res: dict) -> None:
    if "drr" in res:
        d = res["drr"]
        print(f"\nDRRs/s, {d['detector']['height']}x{d['detector']['width']} detector, batch {d['batch']}, "
              f"CT {d['ct']['shape']}:")
        for k, v in d["drrs_per_s"].items():
            print(f"  {k:<36} {v:10.2f}")
        for k, v in d.get("ratios", {}).items():
            print(f"  ratio {k:<50} {v:6.2f}x")
    if "mri" in res:
        print_mri(res["mri"])
    if "realism" in res:
        print("\nRealism, Pearson r (simulated T1w vs real MNI152 T1, brain mask):")
        for k, v in res["realism"]["pearson_r_in_brain_mask"].items():
            print(f"  {k:<40} {v:.3f}")
    if "gpu" in res:
        g = res["gpu"]
        print(f"\nDRRs/s at {g['detector'][0]}x{g['detector'][1]} on {g['device_name']} (rel. L1 vs fp32):")
        for k, v in g["drrs_per_s"].items():
            err = g["rel_l1_vs_fp32"].get(k)
            print(f"  {k:<28} {v if isinstance(v, str) else f'{v:10.1f}'}"
                  + (f"  ({err:.1e})" if err is not None else ""))
        print_mri(g["mri"])


if __name__ == "__main__":
    main()
