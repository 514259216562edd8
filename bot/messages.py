"""Every text the bot shows a user, in one place, so it can be read, tested and translated.

Functions take plain values (class names, numbers) and the user's :class:`bot.i18n.Language` (English
when not given) and return strings; constants are English message ids marked with ``N_``, translated
where they are shown (``language.gettext(messages.BUSY)``). The catalogs are in bot/locale (see
:mod:`bot.i18n`). Nothing here knows Telegram. Operator-only texts (/stats) stay in English.
"""
from __future__ import annotations

from collections.abc import Sequence

from bot.i18n import ENGLISH, N_, Language, display_name
from model import Prediction

FILE_LIMIT_MB = 20

__all__ = ["display_name"]  # re-exported: callers name classes through messages


def with_article(label: str, lang: Language = ENGLISH) -> str:
    """"a kurti", "an anarkali" (English articles; a catalog translates both forms, e.g. to the bare name)."""
    name = lang.product_lower(label)
    if name[:1].lower() in "aeiou":
        return lang.gettext("an {name}").format(name=name)
    return lang.gettext("a {name}").format(name=name)


def either_of(class_names: Sequence[str], lang: Language = ENGLISH) -> str:
    """``["kurti", "saree", "shirt"]`` -> ``"a kurti, a saree or a shirt"``."""
    items = [with_article(name, lang) for name in class_names]
    if not items:
        return lang.gettext("anything I know")
    if len(items) == 1:
        return items[0]
    return lang.gettext("{items} or {last}").format(items=", ".join(items[:-1]), last=items[-1])


def percent(value: float) -> str:
    return f"{round(value * 100)}%"


def guesses(top: Sequence[tuple[str, float]], lang: Language = ENGLISH) -> str:
    return ", ".join(f"{lang.product_lower(label)} {percent(conf)}" for label, conf in top)


def answer_text(prediction: Prediction, class_names: Sequence[str], confidence_threshold: float,
                unsure_threshold: float, lang: Language = ENGLISH) -> str:
    """The reply to a photo.

    At or above ``unsure_threshold``: ``"Saree (93%)"``. Between the thresholds: the answer plus the other
    top guesses. Below ``confidence_threshold``: an honest "I'm not sure" with the top guesses.
    """
    if prediction.confidence < confidence_threshold:
        return lang.gettext("I'm not sure this is {either}.\nMy best guesses: {guesses}.").format(
            either=either_of(class_names, lang), guesses=guesses(prediction.top, lang))
    headline = f"{lang.product(prediction.label)} ({percent(prediction.confidence)})"
    others = [item for item in prediction.top if item[0] != prediction.label]
    if prediction.confidence < unsure_threshold and others:
        return lang.gettext("{answer}, but I'm not certain.\nOther guesses: {guesses}.").format(
            answer=headline, guesses=guesses(others, lang))
    return headline


def album_line(number: int, prediction: Prediction | None, confidence_threshold: float, unsure_threshold: float,
               lang: Language = ENGLISH, problem: str | None = None) -> str:
    """One photo of an album: ``"#2 Saree (93%)"``; ``problem`` when the photo could not be classified."""
    if prediction is None:
        return f"#{number} {problem or lang.gettext(SOMETHING_WRONG)}"
    answer = f"{lang.product(prediction.label)} ({percent(prediction.confidence)})"
    if prediction.confidence < confidence_threshold:
        answer = lang.gettext("not sure: {guesses}").format(guesses=guesses(prediction.top, lang))
    elif prediction.confidence < unsure_threshold and len(prediction.top) > 1:
        answer = lang.gettext("{answer}, not certain").format(answer=answer)
    return f"#{number} {answer}"


def album_text(lines: Sequence[str], lang: Language = ENGLISH) -> str:
    count = len(lines)
    return lang.ngettext("{count} photo:", "{count} photos:", count).format(count=count) + "\n" + "\n".join(lines)


def help_text(class_names: Sequence[str], bot_username: str, confidence_threshold: float,
              feedback_stored: bool = False, journal_hours: float | None = None, lang: Language = ENGLISH) -> str:
    mention = f"@{bot_username}" if bot_username else lang.gettext("the bot")
    known = ", ".join(lang.product_lower(name) for name in class_names) or lang.gettext("(no classes loaded)")
    feedback = lang.gettext(FEEDBACK_HELP) if feedback_stored else lang.gettext(
        "Nothing you send is stored except the id of your last photo in this chat, so /why can find it.")
    if journal_hours is not None:  # JOURNAL_MAX_AGE_HOURS: how long bot.state.journal keeps a request
        feedback += " " + lang.gettext(
            "Each message you send me is also kept for about {hours} hours, so that a restart of the bot never "
            "leaves it unanswered; then it is deleted.").format(hours=f"{journal_hours:g}")
    command_hint = f"/help{mention if bot_username else ''}"
    return "\n\n".join([
        lang.gettext("Send me a photo of a clothing product and I'll tell you what it is.\nI know: {known}.").format(
            known=known),
        lang.gettext("The percentage is how sure the model is (its probability for that class). Below {threshold} "
                     "I say I'm not sure and show my best guesses.").format(threshold=percent(confidence_threshold)),
        lang.gettext("/why (or the \"Why?\" button) shows a heat map of the parts of the photo that mattered: first a "
                     "rough one, then a finer one. Reply /why to a photo to explain that photo, or just send /why for "
                     "your latest photo. Under the map, \"Why not …?\" buttons show the map for the other likely "
                     "classes."),
        lang.gettext("Limits: images up to {limit} MB, as a photo or as a file. An album gets one answer, a numbered "
                     "line per photo.\nIn groups I only answer photos that reply to me or mention {mention} in the "
                     "caption; /why works as a reply to a photo, and commands can be written as {command}.").format(
            limit=FILE_LIMIT_MB, mention=mention, command=command_hint),
        feedback + " " + lang.gettext("/privacy tells what I keep and for how long; /forget deletes it."),
    ])


def start_text(class_names: Sequence[str], bot_username: str, confidence_threshold: float,
               feedback_stored: bool = False, journal_hours: float | None = None, lang: Language = ENGLISH) -> str:
    return lang.gettext("Hello!") + "\n\n" + help_text(class_names, bot_username, confidence_threshold,
                                                        feedback_stored, journal_hours, lang)


COMMANDS = (
    ("start", N_("What this bot does")),
    ("help", N_("How to use it")),
    ("why", N_("Heat map: why did you say that?")),
    ("privacy", N_("What I keep about you, and for how long")),
    ("forget", N_("Delete what I keep about this chat")),
)

TEXT_HINT = N_("Send me a photo of a clothing product (or an image file) and I'll tell you what it is. /help for more.")
ONLY_PHOTOS = N_("I can only look at photos and image files. Send me a photo of a clothing product.")
UNKNOWN_COMMAND = N_("I don't know that command. Try /help.")
WHY_NO_PHOTO = N_("Send me a photo first, then /why (or reply /why to a photo) and I'll show what I looked at.")
WHY_BUTTON = N_("Why?")
WHY_EXPIRED = N_("I no longer have that photo. Please send it again.")
BUSY = N_("I'm busy right now. Please try again in a minute.")
TOO_LARGE = N_("That file is too big for me: Telegram lets bots download up to {limit} MB. Please send a smaller image.")
DOWNLOAD_FAILED = N_("I couldn't download that file from Telegram. Please try sending it again.")
SOMETHING_WRONG = N_("Sorry, something went wrong on my side. Please try again.")
# An update that was being handled when the bot died, twice (bot.state.journal's poison-pill rule): trying it again would not help.
SET_ASIDE = N_("Sorry, I couldn't finish this one: the bot stopped twice while working on it, so I've set it aside. "
               "If it was a large image file, please send it as a photo instead.")
NOT_ADMIN = N_("Sorry, that command is only for the bot's operators.")


def too_large(lang: Language = ENGLISH) -> str:
    return lang.gettext(TOO_LARGE).format(limit=FILE_LIMIT_MB)


def bad_image(reason: str, lang: Language = ENGLISH) -> str:
    """``reason`` comes from :class:`model.ImageError` and is safe to show (it stays in English)."""
    return lang.gettext("I couldn't read that as an image: {reason}. Please send a photo (JPEG, PNG or WebP).").format(
        reason=reason)


def why_button_text(number: int | None, lang: Language = ENGLISH) -> str:
    """"Why?" under one answer; "Why? #2" under an album's answer."""
    return lang.gettext(WHY_BUTTON) + (f" #{number}" if number else "")


def why_not_button(label: str, lang: Language = ENGLISH) -> str:
    return lang.gettext("Why not {name}?").format(name=lang.product(label))


def why_caption(label: str, confidence: float, patch: int, final: bool, lang: Language = ENGLISH) -> str:
    name = lang.product(label)
    meaning = lang.gettext("Red: hiding that part lowers the '{name}' score the most — it mattered. "
                           "Blue: hiding it raises the score.").format(name=lang.product_lower(label))
    if final:
        return lang.gettext("Why {name} ({percent}): {meaning} (squares of {patch} px)").format(
            name=name, percent=percent(confidence), meaning=meaning, patch=patch)
    return lang.gettext("Rough map for {name} ({percent}), squares of {patch} px; a finer one is on its way… "
                        "{meaning}").format(name=name, percent=percent(confidence), meaning=meaning, patch=patch)


def why_not_caption(label: str, probability: float, predicted: str, patch: int, lang: Language = ENGLISH) -> str:
    """The caption of a "Why not …?" map: the class it explains, named, and the answer it lost to."""
    return lang.gettext("Why not {name}? The model gives it {percent} (its answer: {predicted}). Red: hiding that part "
                        "lowers the '{lower}' score — it looked like {lower} there. Blue: hiding it raises the score. "
                        "(squares of {patch} px)").format(
        name=lang.product(label), percent=percent(probability), predicted=lang.product(predicted),
        lower=lang.product_lower(label), patch=patch)


def heat_map_texts(label: str, confidence: float, lang: Language = ENGLISH) -> tuple[str, str, str]:
    """The heat-map picture's title, colour-bar label and legend (model.render draws them)."""
    name, lower = lang.product(label), lang.product_lower(label)
    return (lang.gettext("{name} — {percent} confident").format(name=name, percent=percent(confidence)),
            lang.gettext("drop in P({name}) when the patch is covered").format(name=lower),
            lang.gettext("Red: covering this area lowers the '{name}' score the most").format(name=lower))


def stats_text(snapshot: dict) -> str:
    lines = [
        f"Uptime: {snapshot['uptime']}",
        f"Requests: {snapshot['requests']}  answers: {snapshot['answers']}  errors: {snapshot['errors']}",
        f"Rejected: busy {snapshot['busy']}, bad input {snapshot['bad_input']}",
        f"Queue: {snapshot['queue_length']}",
        f"Latency p50 {snapshot['latency_p50']}, p95 {snapshot['latency_p95']} (last {snapshot['latency_samples']})",
        f"Heat maps served: {snapshot['heatmaps']} (from cache: {snapshot['heatmaps_cached']})",
    ]
    lines += [line.format(snapshot[key]) for key, line in OPTIONAL_STATS_LINES if key in snapshot]
    return "\n".join(lines)


# /stats lines shown when the snapshot has their key (in-process scheduler, cluster, canary, journal)
OPTIONAL_STATS_LINES = (
    ("mean_batch", "Mean batch size: {}"),
    ("forward", "Forward pass: {}"),
    ("heatmap_pauses", "Heat-map pauses for more urgent work: {}"),
    ("cluster", "Cluster: {}"),
    ("canary", "Canary: {}"),
    ("journal_open", "Journal: {} accepted request(s) not yet answered"),
)


# ---- feedback buttons (bot/handlers/feedback.py), shown only when the operator sets FEEDBACK_DIR -------------------
FEEDBACK_HELP = N_(
    "Under each answer, \"✓ Right\" and \"✗ Wrong\" tell me how I did. When you press them, this is stored to "
    "improve the model: the photo itself (photos are kept), what I answered and how sure I was, what you chose, "
    "and the time. Your chat and your account are kept only as anonymous codes, never your name or id. "
    "Send /forget to delete everything you judged, photos included."
)
RIGHT_BUTTON = N_("✓ Right")
WRONG_BUTTON = N_("✗ Wrong")
NONE_OF_THESE_BUTTON = N_("None of these")
FEEDBACK_WHICH = N_("Which one is it?")
FEEDBACK_SAVE_FAILED = N_("Sorry, I couldn't save that. Please try again.")
FEEDBACK_OUTDATED = N_("That answer came from an older model. Send the photo again to give feedback.")
FEEDBACK_PHOTO_GONE = N_("I no longer have that photo. Send it again to give feedback.")
FEEDBACK_OFF = N_("Feedback is switched off on this bot.")
FEEDBACK_PHOTO_LIMIT = N_("You have judged this photo several times today already; I keep what you said. Thank you!")
FEEDBACK_DAY_LIMIT = N_("That is all the feedback I can take from you today. Thank you! Please try again tomorrow.")


def feedback_button_texts(number: int | None, lang: Language = ENGLISH) -> tuple[str, str]:
    """"✓ Right" / "✗ Wrong" under one answer; "#2 ✓" / "#2 ✗" for an album's second photo."""
    if number:
        return f"#{number} ✓", f"#{number} ✗"
    return lang.gettext(RIGHT_BUTTON), lang.gettext(WRONG_BUTTON)


def feedback_thanks(label: str | None, lang: Language = ENGLISH, number: int | None = None) -> str:
    """``"Thanks — noted as saree"``; ``None`` for "None of these"; ``number``: an album's photo."""
    name = lang.product_lower(label) if label else lang.gettext("none of these")
    text = lang.gettext("Thanks — noted as {name}").format(name=name)
    return f"#{number} {text}" if number else text


def forget_done(records: int, photos: int, lang: Language = ENGLISH, feedback_on: bool = True) -> str:
    """/forget's answer: the chat's own state (last photo, answers, journal) is always deleted."""
    kept = lang.gettext("Done: I deleted this chat's last photo, my answers and the journal of its messages.")
    if not feedback_on:
        return kept
    if not records:
        return kept + " " + lang.gettext("There was no feedback from this chat.")
    return kept + " " + lang.ngettext("I also deleted {count} judgement", "I also deleted {count} judgements",
                                      records).format(count=records) + " " + lang.ngettext(
        "and {count} photo.", "and {count} photos.", photos).format(count=photos)


def forget_member_done(records: int, photos: int, lang: Language = ENGLISH, feedback_on: bool = True) -> str:
    """/forget from a group member who is not an admin: only what they judged in the group is deleted."""
    told = lang.gettext("In a group, /forget deletes what you yourself gave me; a group admin's /forget deletes "
                        "everything I keep about the group.")
    if not feedback_on:
        return told
    if not records:
        return told + " " + lang.gettext("There was no feedback from you in this group.")
    return told + " " + lang.ngettext("I deleted {count} judgement", "I deleted {count} judgements",
                                      records).format(count=records) + " " + lang.ngettext(
        "and {count} photo.", "and {count} photos.", photos).format(count=photos)


def privacy_text(retention_days: float, journal_hours: float, feedback_stored: bool, lang: Language = ENGLISH) -> str:
    """/privacy: what is kept, for how long, who sees it, and how to delete it."""
    days = lang.ngettext("{count} day", "{count} days", round(retention_days)).format(count=f"{retention_days:g}")
    parts = [
        lang.gettext("What I keep, on the server that runs me:"),
        "• " + lang.gettext("the id Telegram gives your last photo in each chat (not the photo), so a bare /why "
                            "can find it;"),
        "• " + lang.gettext("my answer to each photo (the product and how sure I was), for /why and the "
                            "feedback buttons;"),
        "• " + lang.gettext("a journal of the messages you send me, so that a restart never leaves one unanswered; "
                            "an answered one is deleted after about {hours} hours.").format(hours=f"{journal_hours:g}"),
    ]
    if feedback_stored:
        parts.append("• " + lang.gettext("when you press ✓ Right or ✗ Wrong: the photo, my answer, your choice and the "
                                         "time, with your chat and your account only as anonymous codes, to improve "
                                         "the model."))
    parts.append("• " + lang.gettext("the server's logs name chats and messages by their numbers only, never your name "
                                     "or what you wrote."))
    parts += [
        lang.gettext("For how long: everything is deleted when it is {days} old, at the latest.").format(days=days),
        lang.gettext("Who sees it: only the people who run this bot. It is not shared or sold. Telegram itself "
                     "carries the messages, under Telegram's privacy policy."),
        lang.gettext("/forget deletes what I keep about this chat now; in a group, what you judged there (a group "
                     "admin's /forget deletes all I keep about the group)."),
    ]
    return "\n".join(parts)


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
