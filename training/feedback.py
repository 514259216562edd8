"""The feedback inbox (``FEEDBACK_DIR`` of the bot) seen from training: labelled photos, and a live report.

``python -m training.feedback report --inbox DIR [--out DIR]``
    prints the live accuracy per class as users judged it and writes ``live_confusion_matrix.png`` and
    ``live_accuracy.json`` (default ``DIR/report/``).
    It also gives live accuracy per checkpoint with 95% intervals (and whether the difference is conclusive
    yet), how many photos the trust rule admits, and the chats whose labels mostly disagree with everyone.
``python -m training.feedback export --inbox DIR --out DIR [--min-chats N] [--min-users N] [--max-chat-share S]``
    links the photos the trust rule admits into ``<class>/`` folders that ``python -m training --extra`` reads
    (``--extra DIR`` on the inbox itself applies the default rule).
``python -m training.feedback review --inbox DIR [--photo ID --label CLASS]``
    lists the photos waiting for an admin's word (corrections too few chats agree on), or records one.

Which label a photo gets: each chat's latest judgement counts once; the photo takes the label most chats
gave it, if :mod:`training.trust` believes it; a tie, or "None of these" winning, leaves the photo out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.inbox import NONE_OF_THESE, FeedbackRecord, Inbox  # noqa: E402
from model.inbox_exports import EXPORT_MARKER  # noqa: E402
from model.live_accuracy import LiveAccuracy, accuracy_difference, per_checkpoint  # noqa: E402

from .trust import REVIEWABLE, TrustRule, read_reviews, suspicious_chats, trusted_labels, write_review  # noqa: E402

log = logging.getLogger(__name__)


class FeedbackError(ValueError):
    """The inbox or export folder cannot be used; the message says what to do."""


def _open_inbox(directory: str | Path) -> Inbox:
    if not Inbox.looks_like_inbox(directory):
        raise FeedbackError(f"{directory} is not a feedback inbox (no records/ folder); point --inbox at FEEDBACK_DIR")
    return Inbox(directory)


def labelled_photos(inbox_dir: str | Path, class_names: Sequence[str] | None = None,
                    rule: TrustRule = TrustRule()) -> dict[str, list[Path]]:
    """class -> stored photo files, for training: the labels ``rule`` believes (:mod:`training.trust`);
    "None of these" and unknown classes (when ``class_names`` is given) are left out, as are photos whose
    file is gone (deleted with /forget)."""
    inbox = _open_inbox(inbox_dir)
    trusted = trusted_labels(inbox.records(), read_reviews(inbox.root), rule)
    for photo_id, why in trusted.left_out.items():
        log.info("feedback photo %s left out of training: %s %s", photo_id, why.reason, why.detail)
    by_class: dict[str, list[Path]] = defaultdict(list)
    for photo_id, label in sorted(trusted.labels.items()):
        if label == NONE_OF_THESE or (class_names is not None and label not in class_names):
            continue
        path = inbox.photo_path(photo_id)
        if path is not None:
            by_class[label].append(path)
    return {name: sorted(paths) for name, paths in sorted(by_class.items())}


def export_labelled(inbox_dir: str | Path, out_dir: str | Path, rule: TrustRule = TrustRule()) -> dict[str, int]:
    """Make ``out_dir/<class>/<photo>`` (hard links where possible, else copies) for ``--extra``; a folder made
    by an earlier export is replaced, any other non-empty folder is refused. Returns photos per class.
    The folder is registered in the inbox (model.inbox EXPORTS_FILE): a photo deleted there later (/forget,
    RETENTION_DAYS) is deleted here too."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_MARKER).exists():
        raise FeedbackError(f"{out} exists and was not made by an export; choose an empty or new folder")
    photos = labelled_photos(inbox_dir, rule=rule)
    # Registered before any link exists: the bot's /forget and retention purge then delete the links too.
    _open_inbox(inbox_dir).register_export(out)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, paths in photos.items():
        (staging / name).mkdir()
        for path in paths:
            try:
                os.link(path, staging / name / path.name)  # no copy of the bytes on the same disk
            except OSError:
                shutil.copy2(path, staging / name / path.name)
    (staging / EXPORT_MARKER).write_text("made by python -m training.feedback export; replaced on re-export\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {name: len(paths) for name, paths in photos.items()}


# ---- the live report -------------------------------------------------------------------------------
def live_class_names(live: LiveAccuracy) -> list[str]:
    """Every class that was predicted or chosen, sorted ("None of these" is not a class)."""
    names = {predicted for _, predicted in live.pairs} | {label for label, _ in live.pairs}
    return sorted(names - {NONE_OF_THESE})


def live_matrix(live: LiveAccuracy, class_names: Sequence[str]) -> np.ndarray:
    """Rows: what users said (the classes, then "None of these"); columns: what the bot answered."""
    rows = list(class_names) + [NONE_OF_THESE]
    matrix = np.zeros((len(rows), len(class_names)), dtype=np.int64)
    for (label, predicted), count in live.pairs.items():
        matrix[rows.index(label), list(class_names).index(predicted)] += count
    return matrix


def save_live_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    rows = [name.replace("_", " ") for name in class_names] + ["none of these"]
    fig, ax = plt.subplots(figsize=(max(5.5, 2.6 + 0.9 * len(class_names)), max(4.0, 1.2 + 0.8 * len(rows))))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())), aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(class_names)), [name.replace("_", " ") for name in class_names],
                  rotation=45 if len(class_names) > 4 else 0, ha="right" if len(class_names) > 4 else "center")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("the bot answered")
    ax.set_ylabel("users said")
    total, right = int(matrix.sum()), int(np.trace(matrix[: len(class_names)]))
    ax.set_title(f"Live feedback: {right}/{total} right ({right / total:.0%})" if total else "Live feedback: none yet")
    threshold = matrix.max() / 2 if matrix.max() else 0.5
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _fraction(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.0%}"


def report_text(live: LiveAccuracy, class_names: Sequence[str], records: Sequence[FeedbackRecord]) -> str:
    if not live.judged:
        return "No feedback yet."
    lines = [f"live accuracy: {live.accuracy:.1%} ({live.right} of {live.judged} answers judged right; "
             f"{live.none_of_these} 'none of these'; latest judgement per photo and chat)",
             f"{'class':<16} {'answered':>8} {'right':>6} {'precision':>9} {'labelled':>8} {'recall':>6}"]
    for name, s in live.per_class(class_names).items():
        lines.append(f"{name:<16} {s['answered']:>8} {s['right']:>6} {_fraction(s['precision']):>9} "
                     f"{s['labelled']:>8} {_fraction(s['recall']):>6}")
    lines += checkpoint_lines(records)
    return "\n".join(lines)


def checkpoint_lines(records: Sequence[FeedbackRecord]) -> list[str]:
    """Live accuracy per checkpoint with its 95% interval, and the two most judged ones compared."""
    scores = per_checkpoint(records)
    lines = ["live accuracy by checkpoint (95% Wilson interval):"]
    for score in scores:
        low, high = score.interval
        lines.append(f"  {score.checkpoint_id[:12]}: {score.accuracy:.1%} ({score.right} of {score.judged}), "
                     f"{low:.1%}-{high:.1%}")
    if len(scores) >= 2:
        a, b = scores[0], scores[1]
        diff, low, high = accuracy_difference(a, b)
        verdict = ("conclusive" if low > 0 or high < 0 else "not conclusive yet: keep both and gather more judgements")
        lines.append(f"  {a.checkpoint_id[:12]} minus {b.checkpoint_id[:12]}: {diff:+.1%} (95% {low:+.1%} to {high:+.1%}), "
                     f"{verdict}")
    return lines


def trust_lines(inbox: Inbox, records: Sequence[FeedbackRecord], rule: TrustRule) -> list[str]:
    trusted = trusted_labels(records, read_reviews(inbox.root), rule)
    reasons = Counter(why.reason for why in trusted.left_out.values())
    lines = [f"training may use {len(trusted.labels)} photo(s) (min {rule.min_users} users in {rule.min_chats} chats for "
             f"a correction, at most {rule.max_chat_share:.0%} from one user); left out: "
             + (", ".join(f"{n} {why}" for why, n in reasons.most_common()) or "none")]
    suspicious = suspicious_chats(records)
    if suspicious:
        lines.append("chats whose labels mostly disagree with the model and with every other user:")
        lines += [f"  chat {s.chat[:12]}: {s.against_everyone} of {s.judged} judgements" for s in suspicious]
    return lines


def live_report(inbox_dir: str | Path, out_dir: str | Path | None = None,
                rule: TrustRule = TrustRule()) -> tuple[str, Path]:
    """The printed report and the folder holding ``live_confusion_matrix.png`` and ``live_accuracy.json``."""
    inbox = _open_inbox(inbox_dir)
    records = inbox.records()
    live = LiveAccuracy.of(records)
    class_names = live_class_names(live)
    out = Path(out_dir) if out_dir is not None else inbox.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    matrix = live_matrix(live, class_names)
    save_live_confusion_matrix(matrix, class_names, out / "live_confusion_matrix.png")
    summary = {
        "judged": live.judged, "right": live.right, "accuracy": live.accuracy, "none_of_these": live.none_of_these,
        "per_class": live.per_class(class_names), "class_names": class_names,
        "confusion_matrix": {"rows_users_said": class_names + [NONE_OF_THESE], "columns_bot_answered": class_names,
                             "counts": matrix.tolist()},
        "photos_kept": inbox.photo_count(),
        "per_checkpoint": [{"checkpoint_id": c.checkpoint_id, "judged": c.judged, "right": c.right,
                            "accuracy": c.accuracy, "interval_95": c.interval} for c in per_checkpoint(records)],
        "suspicious_chats": [s.__dict__ for s in suspicious_chats(records)],
    }
    (out / "live_accuracy.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = report_text(live, class_names, records)
    if live.judged:
        text += "\n" + "\n".join(trust_lines(inbox, records, rule))
    return text, out


def awaiting_review(inbox_dir: str | Path, rule: TrustRule = TrustRule()) -> dict[str, str]:
    """photo id -> why it is left out, for the photos an admin's review would bring in (corrections)."""
    inbox = _open_inbox(inbox_dir)
    trusted = trusted_labels(inbox.records(), read_reviews(inbox.root), rule)
    return {photo: f"{why.reason} {why.detail}" for photo, why in trusted.left_out.items() if why.reason in REVIEWABLE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.feedback", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="live accuracy per class and a confusion matrix PNG")
    report.add_argument("--inbox", required=True, type=Path, help="the bot's FEEDBACK_DIR")
    report.add_argument("--out", type=Path, help="where the PNG and JSON go (default: INBOX/report)")
    export = commands.add_parser("export", help="judged photos as <class>/ folders for python -m training --extra")
    export.add_argument("--inbox", required=True, type=Path, help="the bot's FEEDBACK_DIR")
    export.add_argument("--out", required=True, type=Path, help="folder to (re)create")
    review = commands.add_parser("review", help="list the photos waiting for an admin's label, or give one")
    review.add_argument("--inbox", required=True, type=Path, help="the bot's FEEDBACK_DIR")
    review.add_argument("--photo", help="the photo id (as listed) to label")
    review.add_argument("--label", help="its class, as the admin sees it (or 'none of these')")
    for command in (report, export):
        command.add_argument("--min-chats", type=int, default=TrustRule.min_chats,
                             help="distinct chats that must agree on a correction (default %(default)s)")
        command.add_argument("--max-chat-share", type=float, default=TrustRule.max_chat_share,
                             help="most of the admitted photos one user may account for (default %(default)s)")
        command.add_argument("--cap-floor", type=int, default=TrustRule.cap_floor,
                             help="photos any user may always have, whatever the share (default %(default)s)")
        command.add_argument("--min-users", type=int, default=TrustRule.min_users,
                             help="distinct users who must agree on a correction (default %(default)s)")
    args = parser.parse_args(argv)
    if (args.command == "review") and (args.photo is None) != (args.label is None):
        parser.error("review: give both --photo and --label, or neither (to list)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "review":
            return review_command(args)
        rule = TrustRule(args.min_chats, args.max_chat_share, args.cap_floor, args.min_users)
        if args.command == "report":
            text, out = live_report(args.inbox, args.out, rule)
            print(text)
            print(f"written: {out / 'live_confusion_matrix.png'}, {out / 'live_accuracy.json'}")
        else:
            counts = export_labelled(args.inbox, args.out, rule)
            print(f"exported to {args.out}: " + (", ".join(f"{n} {c}" for c, n in counts.items()) or "no labelled photos"))
            print(f"train with: python -m training --data DIR --extra {args.out}")
    except FeedbackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def review_command(args: argparse.Namespace) -> int:
    inbox = _open_inbox(args.inbox)
    if args.photo is None:
        waiting = awaiting_review(inbox.root)
        for photo_id, why in waiting.items():
            print(f"{photo_id}  {inbox.photo_path(photo_id) or '(photo deleted)'}  {why}")
        print(f"{len(waiting)} photo(s) waiting; label one with --photo ID --label CLASS")
        return 0
    if inbox.photo_path(args.photo) is None and not any(r.photo_id == args.photo for r in inbox.records()):
        raise FeedbackError(f"no photo {args.photo} in {inbox.root}")
    label = NONE_OF_THESE if args.label.lower() == "none of these" else args.label
    write_review(inbox.root, args.photo, label)
    print(f"reviewed: {args.photo} is {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
