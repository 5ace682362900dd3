"""``hooked-asr sae {train,eval,browse,steer}``: sparse autoencoders on encoder frames.

hooked-asr sae train --layer 2 --frames 200000 --out runs/sae        # espeak speech by default
hooked-asr sae train --out runs/sae --resume
hooked-asr sae eval runs/sae/sae --say "The birch canoe slid on the smooth planks."
hooked-asr sae browse runs/sae/sae --out runs/browser
hooked-asr sae steer runs/sae/sae --say "seven red apples" --feature 12 --mode clamp --value 0
"""

from __future__ import annotations

import argparse
import json

from hooked_asr.cli._common import add_model_argument, load_model_from_args, note, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sae",
        help="train, evaluate, browse and steer sparse autoencoders on encoder frames",
        description="Sparse autoencoders on encoder frames; see each command's --help.",
    )
    s = p.add_subparsers(dest="sae_command", required=True, metavar="COMMAND")

    def audio_args(q: argparse.ArgumentParser, n_default: int) -> None:
        q.add_argument("--audio", nargs="*", default=[], help="wav/flac files (default: espeak-ng sentences)")
        q.add_argument("--say", action="append", default=[], help="a sentence to speak with espeak-ng (repeatable)")
        q.add_argument("--voice", default="en-us", help="espeak-ng voice for --say and the built-in sentences")
        q.add_argument(
            "--n-sentences",
            type=positive_int,
            default=n_default,
            help="built-in sentences spoken by espeak-ng when no --audio / --say is given",
        )
        add_model_argument(q, default_help="the SAE's model, else whisper-tiny.en")

    t = s.add_parser(
        "train",
        help="train an SAE streaming frames from the model",
        description="Train a sparse autoencoder on one encoder hook's frames, streamed from the model "
        "(checkpointed; --resume continues). Writes OUT/checkpoint/ and OUT/sae/.",
    )
    audio_args(t, 400)
    t.add_argument("--layer", type=int, default=2, help="encoder block whose hook is read")
    t.add_argument("--site", default="resid_post", help="hook in that block (act_name's site: resid_pre, mlp_out, ...)")
    t.add_argument(
        "--arch",
        choices=["topk", "relu"],
        default="topk",
        help="TopK (exactly --k active features) or ReLU with an L1 penalty (--l1)",
    )
    t.add_argument("--k", type=positive_int, default=32, help="active features per frame (topk)")
    t.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (relu)")
    t.add_argument("--expansion", type=positive_int, default=8, help="features = expansion x d_model")
    t.add_argument("--frames", type=positive_int, default=200_000, help="training frames in total")
    t.add_argument("--batch", type=positive_int, default=512, help="frames per optimiser step")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--out", required=True, help="folder: checkpoint/ and sae/ go in it")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT/checkpoint")
    t.set_defaults(func=run_train)

    e = s.add_parser(
        "eval",
        help="FVU, L0, dead fraction, spliced WER and cross-entropy",
        description="Reconstruction (FVU, L0, dead / dense fractions) and the SAE spliced into the "
        "model (WER, decoder cross-entropy), printed as JSON.",
    )
    e.add_argument("sae", help="a saved SAE folder (save_sae / sae train's OUT/sae)")
    audio_args(e, 16)
    e.add_argument(
        "--frames-spliced",
        choices=["speech", "all"],
        default="speech",
        help="splice the SAE into the speech frames only, or every frame",
    )
    e.set_defaults(func=run_eval)

    b = s.add_parser(
        "browse",
        help="write an HTML feature browser",
        description="Feature statistics over the audio, and an HTML page per feature (top frames with "
        "audio, the words spoken there, histograms).",
    )
    b.add_argument("sae", help="a saved SAE folder")
    audio_args(b, 60)
    b.add_argument("--features", type=int, nargs="*", default=None, help="feature ids (default: the strongest)")
    b.add_argument("--n-features", type=positive_int, default=16, help="how many features when --features is not given")
    b.add_argument("--out", required=True, help="folder for index.html and the feature pages")
    b.set_defaults(func=run_browse)

    st = s.add_parser(
        "steer",
        help="transcribe with features added, scaled or clamped",
        description="Transcribe each clip clean and with the SAE's features changed (the SAE's "
        "reconstruction error is kept, so only the features change).",
    )
    st.add_argument("sae", help="a saved SAE folder")
    audio_args(st, 4)
    st.add_argument("--feature", type=int, nargs="+", required=True, help="feature ids to change")
    st.add_argument(
        "--mode",
        choices=["add", "scale", "clamp"],
        default="clamp",
        help="add --value to the feature, scale it by --value, or clamp it to --value",
    )
    st.add_argument("--value", type=float, default=0.0, help="the amount for --mode")
    st.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    st.set_defaults(func=run_steer)


def _model(args: argparse.Namespace, sae=None):
    return load_model_from_args(args, default=sae.cfg.model_name if sae is not None else None)


def _audio(args: argparse.Namespace, seed: int = 1) -> tuple[list, list[str] | None]:
    """Audio clips and their texts (None for files)."""
    from hooked_asr.audio import load_audio

    clips = [load_audio(a) for a in args.audio]
    if clips and not args.say:
        return clips, None
    from tqdm.auto import tqdm

    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.sae.corpus import english_sentences

    texts = list(args.say) or english_sentences(args.n_sentences, seed=seed)
    spoken = [
        synthesize(t, voice=args.voice)
        for t in tqdm(texts, desc="speaking (espeak-ng)", unit="sentence", disable=len(texts) < 8)
    ]
    return clips + spoken, ([""] * len(clips) + texts) if not clips else None


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hooked_asr import act_name
    from hooked_asr.sae import ModelFrameSource, SAEConfig, SAETrainer, SparseAutoencoder, TrainConfig, save_sae

    model = _model(args)
    clips, _ = _audio(args, seed=0)
    hook = act_name(args.site, args.layer, "encoder")
    source = ModelFrameSource(model, clips, hook, batch_size=4)
    ckpt = Path(args.out) / "checkpoint"
    if args.resume:
        trainer = SAETrainer.resume(ckpt, source)
    else:
        d = model.cfg.encoder.d_model
        cfg = SAEConfig(
            d_in=d,
            d_sae=args.expansion * d,
            architecture=args.arch,
            k=args.k,
            l1_coefficient=args.l1,
            hook_name=hook,
            model_name=args.model or model.cfg.name,
            dead_after_frames=min(200_000, args.frames // 4),
        )
        trainer = SAETrainer(
            SparseAutoencoder(cfg),
            TrainConfig(
                total_frames=args.frames,
                batch_size=args.batch,
                lr=args.lr,
                checkpoint_dir=str(ckpt),
                checkpoint_every=100,
            ),
        )
    note(f"reading the first {trainer.cfg.buffer_frames} frames of {hook} (then one bar step per batch) ...")
    trainer.train(source)
    path = save_sae(trainer.sae, Path(args.out) / "sae")
    h = trainer.state.history[-1] if trainer.state.history else {}
    print(
        f"saved {path}  (last batch: FVU {h.get('fvu', float('nan')):.3f}, L0 {h.get('l0', float('nan')):.1f}, "
        f"dead {100 * h.get('dead_fraction', float('nan')):.1f}%)"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from hooked_asr.sae import ModelFrameSource, load_sae
    from hooked_asr.sae.evaluate import reconstruction_metrics, splice_metrics

    sae = load_sae(args.sae)
    model = _model(args, sae)
    clips, texts = _audio(args)
    recon = reconstruction_metrics(sae, ModelFrameSource(model, clips, sae.cfg.hook_name))
    spl = splice_metrics(model, sae, clips, references=texts, frames=args.frames_spliced)
    print(json.dumps({"reconstruction": recon.summary(), "splice": spl.summary()}, indent=2))
    return 0


def run_browse(args: argparse.Namespace) -> int:
    from hooked_asr.sae import load_sae
    from hooked_asr.sae.features import collect_feature_stats, feature_reports, write_feature_browser

    sae = load_sae(args.sae)
    model = _model(args, sae)
    clips, _ = _audio(args)
    stats = collect_feature_stats(model, sae, clips)
    feats = args.features
    if feats is None:
        ok = ((stats.frequency > 0) & (stats.frequency < 0.1)).nonzero().flatten()
        feats = ok[stats.max_act[ok].argsort(descending=True)][: args.n_features].tolist()
    reports = feature_reports(model, stats, clips, feats)
    out = write_feature_browser(model, sae, stats, reports, clips, args.out)
    for r in reports:
        print(f"{r.feature:6d}  {r.label}")
    print(f"wrote {out / 'index.html'}")
    return 0


def run_steer(args: argparse.Namespace) -> int:
    from hooked_asr.sae import load_sae
    from hooked_asr.sae.steering import FeatureIntervention, steer

    sae = load_sae(args.sae)
    model = _model(args, sae)
    clips, texts = _audio(args)
    iv = [FeatureIntervention(feature=args.feature, mode=args.mode, value=args.value)]
    for i, clip in enumerate(clips):
        clean = model.transcribe(clip, language=args.language)
        with steer(model, sae, iv):
            steered = model.transcribe(clip, language=args.language)
        if texts:
            print(f"text:    {texts[i]}")
        print(f"clean:   {clean.text}\nsteered: {steered.text}\n")
    return 0


__all__ = ["add_parser", "run_browse", "run_eval", "run_steer", "run_train"]
