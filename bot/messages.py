"""Every text the bot shows a user, in one place, so it can be read, tested and later translated.

Functions take plain values (class names, numbers) and return strings; nothing here knows Telegram.
"""
from __future__ import annotations

from collections.abc import Sequence

from model import Prediction

FILE_LIMIT_MB = 20


def display_name(label: str) -> str:
    """``"saree"`` -> ``"Saree"``; ``"t_shirt"`` -> ``"T shirt"``."""
    text = label.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else label


def with_article(label: str) -> str:
    name = label.replace("_", " ").strip()
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def either_of(class_names: Sequence[str]) -> str:
    """``["kurti", "saree", "shirt"]`` -> ``"a kurti, a saree or a shirt"``."""
    items = [with_article(name) for name in class_names]
    if not items:
        return "anything I know"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} or {items[-1]}"


def percent(value: float) -> str:
    return f"{round(value * 100)}%"


def guesses(top: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{label.replace('_', ' ')} {percent(conf)}" for label, conf in top)


def answer_text(prediction: Prediction, class_names: Sequence[str], confidence_threshold: float,
                unsure_threshold: float) -> str:
    """The reply to a photo.

    At or above ``unsure_threshold``: ``"Saree (93%)"``. Between the thresholds: the answer plus the other
    top guesses. Below ``confidence_threshold``: an honest "I'm not sure" with the top guesses.
    """
    if prediction.confidence < confidence_threshold:
        return f"I'm not sure this is {either_of(class_names)}.\nMy best guesses: {guesses(prediction.top)}."
    headline = f"{display_name(prediction.label)} ({percent(prediction.confidence)})"
    others = [item for item in prediction.top if item[0] != prediction.label]
    if prediction.confidence < unsure_threshold and others:
        return f"{headline}, but I'm not certain.\nOther guesses: {guesses(others)}."
    return headline


def help_text(class_names: Sequence[str], bot_username: str, confidence_threshold: float,
              feedback_stored: bool = False, journal_hours: float | None = None) -> str:
    mention = f"@{bot_username}" if bot_username else "the bot"
    known = ", ".join(name.replace("_", " ") for name in class_names) or "(no classes loaded)"
    feedback = FEEDBACK_HELP if feedback_stored else ("Nothing you send is stored except the id of your last "
                                                      "photo in this chat, so /why can find it.")
    if journal_hours is not None:  # JOURNAL_MAX_AGE_HOURS: how long bot.journal keeps a request
        feedback += (f" Each message you send me is also kept for about {journal_hours:g} hours, so that a restart "
                     "of the bot never leaves it unanswered; then it is deleted.")
    return (
        "Send me a photo of a clothing product and I'll tell you what it is.\n"
        f"I know: {known}.\n\n"
        "The percentage is how sure the model is (its probability for that class). "
        f"Below {percent(confidence_threshold)} I say I'm not sure and show my best guesses.\n\n"
        "/why (or the \"Why?\" button) shows a heat map of the parts of the photo that mattered: "
        "first a rough one, then a finer one. Reply /why to a photo to explain that photo, "
        "or just send /why for your latest photo.\n\n"
        f"Limits: images up to {FILE_LIMIT_MB} MB, as a photo or as a file. Albums get one answer per photo.\n"
        f"In groups I only answer photos that reply to me or mention {mention} in the caption; "
        f"/why works as a reply to a photo, and commands can be written as /help{mention if bot_username else ''}.\n\n"
        f"{feedback}"
    )


def start_text(class_names: Sequence[str], bot_username: str, confidence_threshold: float,
               feedback_stored: bool = False, journal_hours: float | None = None) -> str:
    return "Hello!\n\n" + help_text(class_names, bot_username, confidence_threshold, feedback_stored, journal_hours)


COMMANDS = (
    ("start", "What this bot does"),
    ("help", "How to use it"),
    ("why", "Heat map: why did you say that?"),
)

TEXT_HINT = "Send me a photo of a clothing product (or an image file) and I'll tell you what it is. /help for more."
ONLY_PHOTOS = "I can only look at photos and image files. Send me a photo of a clothing product."
UNKNOWN_COMMAND = "I don't know that command. Try /help."
WHY_NO_PHOTO = "Send me a photo first, then /why (or reply /why to a photo) and I'll show what I looked at."
WHY_BUTTON = "Why?"
WHY_EXPIRED = "I no longer have that photo. Please send it again."
BUSY = "I'm busy right now. Please try again in a minute."
TOO_LARGE = f"That file is too big for me: Telegram lets bots download up to {FILE_LIMIT_MB} MB. Please send a smaller image."
DOWNLOAD_FAILED = "I couldn't download that file from Telegram. Please try sending it again."
SOMETHING_WRONG = "Sorry, something went wrong on my side. Please try again."
NOT_ADMIN = "Sorry, that command is only for the bot's operators."


def bad_image(reason: str) -> str:
    """``reason`` comes from :class:`model.ImageError` and is safe to show."""
    return f"I couldn't read that as an image: {reason}. Please send a photo (JPEG, PNG or WebP)."


def why_caption(label: str, confidence: float, patch: int, final: bool) -> str:
    name = display_name(label)
    meaning = (f"Red: hiding that part lowers the '{label}' score the most — it mattered. "
               f"Blue: hiding it raises the score.")
    if final:
        return f"Why {name} ({percent(confidence)}): {meaning} (squares of {patch} px)"
    return f"Rough map for {name} ({percent(confidence)}), squares of {patch} px; a finer one is on its way… {meaning}"


def stats_text(snapshot: dict) -> str:
    lines = [
        f"Uptime: {snapshot['uptime']}",
        f"Requests: {snapshot['requests']}  answers: {snapshot['answers']}  errors: {snapshot['errors']}",
        f"Rejected: busy {snapshot['busy']}, bad input {snapshot['bad_input']}",
        f"Queue: {snapshot['queue_length']}",
        f"Latency p50 {snapshot['latency_p50']}, p95 {snapshot['latency_p95']} (last {snapshot['latency_samples']})",
        f"Heat maps served: {snapshot['heatmaps']} (from cache: {snapshot['heatmaps_cached']})",
    ]
    if "mean_batch" in snapshot:
        lines.append(f"Mean batch size: {snapshot['mean_batch']}")
    if "forward" in snapshot:
        lines.append(f"Forward pass: {snapshot['forward']}")
    if "heatmap_pauses" in snapshot:
        lines.append(f"Heat-map pauses for more urgent work: {snapshot['heatmap_pauses']}")
    if "cluster" in snapshot:
        lines.append(f"Cluster: {snapshot['cluster']}")
    if "canary" in snapshot:
        lines.append(f"Canary: {snapshot['canary']}")
    if "journal_open" in snapshot:
        lines.append(f"Journal: {snapshot['journal_open']} accepted request(s) not yet answered")
    return "\n".join(lines)


# ---- feedback buttons (bot/feedback.py), shown only when the operator sets FEEDBACK_DIR -------------------
FEEDBACK_HELP = (
    "Under each answer, \"✓ Right\" and \"✗ Wrong\" tell me how I did. When you press them, this is stored to "
    "improve the model: the photo itself (photos are kept), what I answered and how sure I was, what you chose, "
    "and the time. "
    "Your chat is kept only as an anonymous code, never your name or id. "
    "Send /forget to delete everything you judged, photos included."
)
RIGHT_BUTTON = "✓ Right"
WRONG_BUTTON = "✗ Wrong"
NONE_OF_THESE_BUTTON = "None of these"
FEEDBACK_WHICH = "Which one is it?"
FEEDBACK_SAVE_FAILED = "Sorry, I couldn't save that. Please try again."
FEEDBACK_OUTDATED = "That answer came from an older model. Send the photo again to give feedback."
FEEDBACK_PHOTO_GONE = "I no longer have that photo. Send it again to give feedback."
FEEDBACK_OFF = "Feedback is switched off on this bot."
FORGET_OFF = "Nothing from your feedback is stored here, so there is nothing to forget."


def feedback_thanks(label: str | None) -> str:
    """``"Thanks — noted as saree"``; ``None`` for "None of these"."""
    return f"Thanks — noted as {label.replace('_', ' ') if label else 'none of these'}"


def forget_done(records: int, photos: int) -> str:
    if not records:
        return "There was no feedback from this chat. Nothing is stored about it."
    return f"Done: deleted {records} judgement(s) and {photos} photo(s) from this chat."


def feedback_stats(judged: int, right: int, none_of_these: int, photos: int,
                   per_class: dict[str, dict], checkpoints: Sequence = (), serving: str = "",
                   canary: str = "") -> str:
    """The /stats lines: counts and live accuracy as users judged it (latest judgement per photo and chat),
    per class and per checkpoint (``checkpoints``: model.live_accuracy.CheckpointScore, with 95% intervals)."""
    if not judged:
        return f"Feedback: none yet (photos kept: {photos})"
    lines = [f"Feedback: {judged} judged, {right} right ({percent(right / judged)} live accuracy), "
             f"{none_of_these} none of these; photos kept: {photos}"]
    for name, score in per_class.items():
        if score["answered"]:
            lines.append(f"  {name}: {score['right']}/{score['answered']} answers right ({percent(score['precision'])})")
    for score in checkpoints:
        low, high = score.interval
        now = {serving: " (serving)", canary: " (canary)"}.get(score.checkpoint_id, "") if score.checkpoint_id else ""
        lines.append(f"  checkpoint {score.checkpoint_id[:12]}{now}: {score.right}/{score.judged} right "
                     f"({percent(score.accuracy)}, 95% {percent(low)}-{percent(high)})")
    return "\n".join(lines)
