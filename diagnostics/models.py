"""Machines and their credentials, the knowledge base, and the jobs run against machines."""

from __future__ import annotations

import fnmatch
import hashlib
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Case, F, Value, When
from django.db.models.functions import Concat
from django.utils import timezone
from django.utils.translation import get_language, gettext
from django.utils.translation import gettext_lazy as _

from diagnostics import vault

NAME_VALIDATOR = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", _("Letters, digits, . _ -"))
# A host name, an IPv4 address or an IPv6 one (bracketed or not): never a URL, so no
# "user:pass@", path, fragment, markup or control character reaches the WinRM endpoint.
ADDRESS_VALIDATOR = RegexValidator(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]{2,45}\]?)\Z",
    _("Give a host name or an IP address only (letters, digits, . - and : for IPv6)."),
)


def active_lang() -> str:
    """The portal language in use ("ja" or "en"): which half of a bilingual field to show."""
    return "en" if (get_language() or "ja").startswith("en") else "ja"


class Bilingual:
    """Mixin: ``obj.tr("title")`` returns title_ja or title_en for the active language."""

    def tr(self, field: str) -> str:
        lang = active_lang()
        value = getattr(self, f"{field}_{lang}", "")
        return value or getattr(self, f"{field}_{'en' if lang == 'ja' else 'ja'}", "")


class Credential(models.Model):
    """A WinRM account. The password is encrypted at rest and never rendered back.

    Where it may be sent is an administrator's decision (issue #16): the machines they bound
    to it (``Machine.bind``) and the addresses matching ``address_pattern``, and only over a
    channel that proves the machine's identity unless ``allow_unverified`` says it is a lab.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    username = models.CharField(_("user name"), max_length=200)
    password_encrypted = models.TextField(_("password (encrypted)"), editable=False)
    address_pattern = models.CharField(
        _("address pattern"),
        max_length=253,
        blank=True,
        help_text=_(
            "Machines whose address matches this pattern (* and ? as wildcards, e.g. "
            "*.pc.example.co.jp) may use this credential without an administrator binding "
            "each one. Blank: only machines an administrator bound to it."
        ),
    )
    allow_unverified = models.BooleanField(
        _("lab: allow unverified machines"),
        default=False,
        help_text=_(
            "Lab only (the winsim demo): send this credential, and the secrets fixes send "
            "with it, to machines whose identity is not verified (plain HTTP, or HTTPS without "
            "certificate verification). Leave off for real machines."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("credential")
        verbose_name_plural = _("credentials")

    def __str__(self) -> str:
        return self.name

    def set_password(self, raw: str) -> None:
        self.password_encrypted = vault.encrypt(raw)

    def get_password(self) -> str:
        return vault.decrypt(self.password_encrypted)

    def covers(self, address: str) -> bool:
        """Whether ``address`` matches the administrator's pattern (case-insensitive)."""
        pattern = self.address_pattern.strip().lower()
        return bool(pattern) and fnmatch.fnmatchcase(address.strip().lower(), pattern)


class Secret(models.Model):
    """A value a fix needs (e.g. the company L2TP PSK), encrypted; referenced as {secret: name}."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=200, blank=True)
    value_encrypted = models.TextField(_("value (encrypted)"), editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("secret")
        verbose_name_plural = _("secrets")

    def __str__(self) -> str:
        return self.name

    def set_value(self, raw: str) -> None:
        self.value_encrypted = vault.encrypt(raw)

    def get_value(self) -> str:
        return vault.decrypt(self.value_encrypted)


def target_signature(address: str, port: int, scheme: str, verify_tls: bool, cred: Any) -> str:
    """A digest of a machine's target: any change of address, port, scheme, TLS or credential
    gives another one, so an approval never carries over to a target nobody approved."""
    text = "\n".join(str(p) for p in (address.strip().lower(), port, scheme, verify_tls, cred))
    return hashlib.sha256(text.encode()).hexdigest()


class Machine(models.Model):
    """A Windows endpoint reached over WinRM or its agent, owned by one or more employees.

    Its *target* (address, port, scheme, TLS verification, credential) says where the
    credential's password goes; an administrator binds it (``bind``), and a target changed
    by anyone else is unbound until one approves it (``credential_refusal``).
    """

    TARGET_FIELDS = ("address", "port", "scheme", "verify_tls", "credential")

    class Scheme(models.TextChoices):
        HTTP = "http", "HTTP (NTLM, encrypted)"
        HTTPS = "https", "HTTPS"

    class Channel(models.TextChoices):
        WINRM = "winrm", _("WinRM (the portal connects)")
        AGENT = "agent", _("Agent (the PC checks in)")
        # WinRM first: it answers at once when the PC is on the company network; the agent
        # when WinRM cannot connect (nothing has run then), e.g. at home with the VPN down.
        BOTH = "both", _("WinRM first, then the agent")

    name = models.CharField(_("name"), max_length=63, unique=True, validators=[NAME_VALIDATOR])
    address = models.CharField(_("address"), max_length=253, validators=[ADDRESS_VALIDATOR])
    port = models.PositiveIntegerField(
        _("port"), default=5986, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    scheme = models.CharField(_("scheme"), max_length=5, choices=Scheme, default=Scheme.HTTPS)
    verify_tls = models.BooleanField(_("verify TLS certificate"), default=True)
    credential = models.ForeignKey(
        Credential, verbose_name=_("credential"), on_delete=models.PROTECT, related_name="machines"
    )
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL, verbose_name=_("owners"), related_name="machines", blank=True
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # What the portal's account could do at the last "test connection": plans.capabilities()
    # rows ({kind, status, reason, need, detail}) and the account they were found for.
    preflight = models.JSONField(_("last connection test"), null=True, blank=True, editable=False)
    preflight_at = models.DateTimeField(
        _("connection tested at"), null=True, blank=True, editable=False
    )
    # The target an administrator approved (``target_signature``), by whom and when; a
    # different current target is not approved.
    bound_target = models.CharField(_("approved target"), max_length=64, blank=True, editable=False)
    bound_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("target approved by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    bound_at = models.DateTimeField(_("target approved at"), null=True, blank=True, editable=False)
    # How the portal reaches it (issue #14): WinRM in, the agent's outbound poll, or both.
    channel = models.CharField(_("channel"), max_length=12, choices=Channel, default=Channel.WINRM)
    # The agent's credential: only a SHA-256 of a 256-bit random secret (a fast hash is
    # enough for a secret nobody chose); empty = never enrolled or revoked.
    agent_key_hash = models.CharField(
        _("agent key (hash)"), max_length=64, blank=True, editable=False
    )
    agent_enrolled_at = models.DateTimeField(
        _("agent enrolled at"), null=True, blank=True, editable=False
    )
    agent_revoked_at = models.DateTimeField(
        _("agent revoked at"), null=True, blank=True, editable=False
    )
    agent_last_seen = models.DateTimeField(_("agent last seen"), null=True, blank=True)
    agent_version = models.CharField(_("agent version"), max_length=40, blank=True)
    agent_boot = models.CharField(
        _("agent boot"), max_length=64, blank=True, editable=False
    )  # last boot it told

    class Meta:
        ordering = ["name"]
        verbose_name = _("machine")
        verbose_name_plural = _("machines")
        permissions = [
            (
                "change_machine_target",
                _("Can change where a machine's credential is sent (address, scheme, TLS)"),
            )
        ]

    def __str__(self) -> str:
        return self.name

    def target_signature(self) -> str:
        return target_signature(
            self.address, self.port, self.scheme, self.verify_tls, self.credential_id
        )

    def bind(self, user: Any) -> None:
        """Record that ``user`` (an administrator; None for the portal's own set-up) approved
        the current target. The caller saves."""
        self.bound_target = self.target_signature()
        self.bound_by = user
        self.bound_at = timezone.now()

    @property
    def identity_verified(self) -> bool:
        """HTTPS with certificate verification proves the host is who it says it is."""
        return (
            self.scheme == self.Scheme.HTTPS
            and self.verify_tls
            and settings.KAIKETSU_WINRM_VERIFY_TLS
        )

    def credential_refusal(self) -> str:
        """Why the credential (and any secret) must not be sent to this target; '' if it may.

        Two conditions, both needed: the target is bound (by an administrator, or by the
        credential's address pattern), and the host's identity is verified (or the
        credential is a lab one).
        """
        cred = self.credential
        if self.bound_target != self.target_signature() and not cred.covers(self.address):
            return gettext(
                "%(m)s: its connection settings were not approved by an administrator, so "
                "the portal does not send the credential %(c)s there."
            ) % {"m": self.name, "c": cred.name}
        if not self.identity_verified and not cred.allow_unverified:
            return gettext(
                "%(m)s: its identity is not verified (use HTTPS with certificate "
                "verification), so the portal does not send the credential %(c)s there."
            ) % {"m": self.name, "c": cred.name}
        return ""

    @property
    def agent_enrolled(self) -> bool:
        return bool(self.agent_key_hash)

    @property
    def uses_agent(self) -> bool:
        return self.channel in (self.Channel.AGENT, self.Channel.BOTH)


class EnrolmentToken(models.Model):
    """A one-time code an administrator gives the agent installer (issue #14).

    For one machine (``machine`` set) or for a batch (``uses`` > 1, the agent's computer
    name picks or creates the machine). Only a SHA-256 of the code is kept.
    """

    token_hash = models.CharField(_("token (hash)"), max_length=64, unique=True, editable=False)
    machine = models.ForeignKey(
        Machine,
        verbose_name=_("machine"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="enrolment_tokens",
    )
    uses_left = models.PositiveIntegerField(_("uses left"), default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    expires_at = models.DateTimeField(
        _("expires at"),
    )

    class Meta:
        verbose_name = _("enrolment token")
        verbose_name_plural = _("enrolment tokens")

    def __str__(self) -> str:
        return f"token #{self.pk} for {self.machine_id or 'a batch'}"


class AgentTask(models.Model):
    """One plan handed to a machine's agent: the agent-channel twin of one WinRM command.

    The worker creates it and ends its turn (``jobs.Wait``); the agent fetches the plan
    (signed at fetch time), posts the result lines, and its last line wakes the job. The plan
    (which may carry a secret) is kept encrypted only until it is fetched.
    """

    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting for the PC")
        SENT = "sent", _("Running on the PC")
        DONE = "done", _("Reported")
        TAKEN = "taken", _("Read by the job")

    OPEN = (Status.WAITING, Status.SENT, Status.DONE)

    job = models.ForeignKey(
        "Job", verbose_name=_("job"), on_delete=models.CASCADE, related_name="agent_tasks"
    )
    machine = models.ForeignKey(
        Machine, verbose_name=_("machine"), on_delete=models.CASCADE, related_name="agent_tasks"
    )
    status = models.CharField(_("status"), max_length=8, choices=Status, default=Status.WAITING)
    fingerprint = models.CharField(
        _("plan fingerprint"), max_length=64
    )  # what was asked: kinds and args
    steps = models.JSONField(_("steps"), default=list)  # [{id, kind, phase, title, check, expect}]
    first_position = models.PositiveIntegerField(_("first step position"), default=0)
    plan_encrypted = models.TextField(
        _("plan (encrypted)"), blank=True, editable=False
    )  # emptied once fetched
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    last_line_at = models.DateTimeField(_("last line at"), null=True, blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    agent_boot = models.CharField(
        _("agent boot"), max_length=64, blank=True
    )  # the boot that fetched it
    lines = models.PositiveIntegerField(_("lines received"), default=0)
    ended = models.BooleanField(_("ended"), default=False)
    fatal = models.TextField(_("fatal error"), blank=True)
    bad_lines = models.JSONField(_("rejected lines"), default=list, blank=True)
    failure = models.CharField(
        _("failure"), max_length=20, blank=True
    )  # why it ended early (a kind)
    transcript = models.TextField(_("transcript"), blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("agent task")
        verbose_name_plural = _("agent tasks")
        indexes = [models.Index(fields=["machine", "status"], name="agenttask_machine_status")]

    def __str__(self) -> str:
        return f"agent task #{self.pk} of job {self.job_id}"


class SigningKey(models.Model):
    """The portal's RSA key that signs agent plans; one row, created on first use, encrypted."""

    slot = models.PositiveSmallIntegerField(_("slot"), default=1, unique=True)
    private_pem_encrypted = models.TextField(_("private key (encrypted)"), editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("signing key")
        verbose_name_plural = _("signing keys")

    def __str__(self) -> str:
        return f"signing key {self.slot}"


class Article(Bilingual, models.Model):
    """A knowledge-base article: what an error means, why it happens, what to check and fix."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")

    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.DRAFT)
    error_codes = models.JSONField(_("error codes"), default=list, blank=True)
    title_ja = models.CharField(_("title (Japanese)"), max_length=200)
    title_en = models.CharField(_("title (English)"), max_length=200)
    summary_ja = models.TextField(_("summary (Japanese)"), blank=True)
    summary_en = models.TextField(_("summary (English)"), blank=True)
    causes_ja = models.TextField(_("causes (Japanese)"), blank=True)
    causes_en = models.TextField(_("causes (English)"), blank=True)
    steps_ja = models.TextField(_("steps (Japanese)"), blank=True)
    steps_en = models.TextField(_("steps (English)"), blank=True)
    notes_ja = models.TextField(_("notes (Japanese)"), blank=True)
    notes_en = models.TextField(_("notes (English)"), blank=True)
    # How the article is judged and why (issue #11): for the people who edit it, never shown
    # to employees.
    editor_notes_ja = models.TextField(
        _("notes for KB editors (Japanese)"), blank=True, help_text=_("Never shown to employees.")
    )
    editor_notes_en = models.TextField(
        _("notes for KB editors (English)"), blank=True, help_text=_("Never shown to employees.")
    )
    manual_steps = models.JSONField(_("manual steps"), default=list, blank=True)
    sources = models.JSONField(_("sources"), default=list, blank=True)
    # Causes no check can read (the PSK), each {key, title, codes, explanation, fix}: proven
    # only by ruling out every other cause of the current error code (docs/kb-format.md).
    inferred = models.JSONField(_("inferred"), default=list, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = _("article")
        verbose_name_plural = _("articles")

    def __str__(self) -> str:
        return self.slug


class Signature(models.Model):
    """A text a user may paste for this article (Microsoft's wording, rasdial, event log...)."""

    class Lang(models.TextChoices):
        JA = "ja", "日本語"
        EN = "en", "English"

    article = models.ForeignKey(
        Article, verbose_name=_("article"), on_delete=models.CASCADE, related_name="signatures"
    )
    lang = models.CharField(_("language"), max_length=2, choices=Lang)
    text = models.TextField(
        _("text"),
    )
    source = models.CharField(_("source"), max_length=500, blank=True)
    verified = models.BooleanField(_("verified"), default=True)

    class Meta:
        ordering = ["article", "id"]
        verbose_name = _("signature")
        verbose_name_plural = _("signatures")

    def __str__(self) -> str:
        return self.text[:60]


class Fix(Bilingual, models.Model):
    """Typed fix steps an article offers for a failed check."""

    article = models.ForeignKey(
        Article, verbose_name=_("article"), on_delete=models.CASCADE, related_name="fixes"
    )
    key = models.SlugField(_("key"), max_length=100)
    position = models.PositiveIntegerField(_("position"), default=0)
    title_ja = models.CharField(_("title (Japanese)"), max_length=200)
    title_en = models.CharField(_("title (English)"), max_length=200)
    steps = models.JSONField(_("steps"), default=list)  # [{"kind": ..., "args": {...}}]
    restart_required = models.BooleanField(_("restart required"), default=False)
    needs_approval = models.BooleanField(_("needs approval"), default=False)
    # Four eyes on what runs on employees' machines (#16, #17): whoever last changed the steps
    # (or turned needs_approval off) in the admin, and the second KB admin who approved that.
    # No author: the steps came from the KB files (kb_import), reviewed where those are.
    steps_author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("steps written by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    steps_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("steps approved by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )

    class Meta:
        ordering = ["article", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "key"], name="uniq_fix_key")]
        verbose_name = _("fix")
        verbose_name_plural = _("fixes")  # not Django's default "Fixs"

    def __str__(self) -> str:
        return f"{self.article.slug}/{self.key}"

    @property
    def awaits_second_admin(self) -> bool:
        """Changed steps nobody but their author has approved yet: not publishable."""
        return self.steps_author_id is not None and self.steps_approved_by_id is None

    def steps_changed_by(self, user: Any) -> None:
        """An edit of the steps (or approval turned off) resets any earlier approval."""
        self.steps_author, self.steps_approved_by = user, None


class Check(Bilingual, models.Model):
    """One automated check: a typed step, the expectation its facts must meet, and words.

    A *cause* check fails when a setting breaks the connection; it is judged only where its
    ``when`` holds and proven only when the current error is one of its ``codes``. An
    *evidence* check (the event log) never fails as a problem: it says what is failing now.
    """

    class Role(models.TextChoices):
        CAUSE = "cause", _("Cause")
        EVIDENCE = "evidence", _("Evidence")

    article = models.ForeignKey(
        Article, verbose_name=_("article"), on_delete=models.CASCADE, related_name="checks"
    )
    key = models.SlugField(_("key"), max_length=100)
    position = models.PositiveIntegerField(_("position"), default=0)
    title_ja = models.CharField(_("title (Japanese)"), max_length=200)
    title_en = models.CharField(_("title (English)"), max_length=200)
    kind = models.CharField(_("kind"), max_length=40)
    args = models.JSONField(_("arguments"), default=dict, blank=True)
    expect = models.JSONField(_("expectation"), default=list, blank=True)
    role = models.CharField(_("role"), max_length=8, choices=Role, default=Role.CAUSE)
    codes = models.JSONField(
        _("codes"), default=list, blank=True
    )  # RAS error codes this cause gives
    when = models.JSONField(
        _("applies when"), default=list, blank=True
    )  # where it matters; [] = always
    explanation_ja = models.TextField(_("explanation (Japanese)"), blank=True)
    explanation_en = models.TextField(_("explanation (English)"), blank=True)
    fix = models.ForeignKey(
        Fix, verbose_name=_("fix"), on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["article", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "key"], name="uniq_check_key")]
        verbose_name = _("check")
        verbose_name_plural = _("checks")

    def __str__(self) -> str:
        return f"{self.article.slug}/{self.key}"


class ArticleVersion(models.Model):
    """An article as one admin save left it, in its file form (``kb.dump``): who, when, what.

    Consecutive versions diff as text; restoring one writes it back as a draft.
    """

    article = models.ForeignKey(
        Article, verbose_name=_("article"), on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField(
        _("number"),
    )
    saved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("saved by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
    )
    saved_at = models.DateTimeField(_("saved at"), default=timezone.now)
    note = models.CharField(_("note"), max_length=200, blank=True)  # e.g. "restored version 1"
    text = models.TextField(
        _("text"),
    )

    class Meta:
        ordering = ["article", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["article", "number"], name="uniq_article_version")
        ]
        verbose_name = _("article version")
        verbose_name_plural = _("article versions")

    def __str__(self) -> str:
        return f"{self.article_id} v{self.number}"


class Scan(models.Model):
    """A fleet scan: an article's read-only checks run on many machines, a few at a time.

    Each machine gets an ordinary diagnosis job (``Job.scan``), so the history, the job page
    and the fixes work as for any diagnosis; the scan only feeds them in and counts.
    """

    article = models.ForeignKey(
        "Article", verbose_name=_("article"), on_delete=models.PROTECT, related_name="scans"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        on_delete=models.PROTECT,
        related_name="scans",
    )
    selection = models.CharField(_("machines"), max_length=300)  # what the helpdesk chose, in words
    machine_ids = models.JSONField(
        _("machine IDs"), default=list
    )  # the chosen machines when the scan began
    next_index = models.PositiveIntegerField(
        _("next machine"), default=0
    )  # machine_ids[:next_index] are started
    concurrency = models.PositiveSmallIntegerField(_("concurrency"), default=20)
    skipped = models.JSONField(
        _("skipped"), default=list, blank=True
    )  # [{"machine": id, "why": "..."}]
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("fleet scan")
        verbose_name_plural = _("fleet scans")

    def __str__(self) -> str:
        return f"scan #{self.pk} {self.article_id}"


class Job(models.Model):
    """One run of typed steps on one machine: a diagnosis, a fix or a roll-back.

    Status moves only through the methods below, the engine (jobs.py) and the workflows:
    APPROVAL -> QUEUED (approved) | DECLINED;  QUEUED -> RUNNING;
    RUNNING -> RESTARTING (the machine restarts, then verification) | WAITING (restart later)
            -> DONE | ERROR | INTERRUPTED;
    QUEUED | WAITING | CONNECT -> CANCELLED (the helpdesk, between turns).
    The outcome says what a finished job found. At most one job per machine is ACTIVE
    (a database constraint), and the reaper ends active jobs whose worker died.
    """

    class Kind(models.TextChoices):
        DIAGNOSE = "diagnose", _("Diagnosis")
        FIX = "fix", _("Fix")
        ROLLBACK = "rollback", _("Roll back")

    class Status(models.TextChoices):
        APPROVAL = "approval", _("Waiting for approval")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        RESTARTING = "restarting", _("Restarting")
        WAITING = "waiting", _("Waiting for restart")
        # After a fix: the employee connects the VPN themselves and the job reads the result
        # from the event log (issue #9). It holds the machine: nothing else may change it.
        CONNECT = "connect", _("Waiting for you to connect")
        DONE = "done", _("Done")
        ERROR = "error", _("Could not run")
        INTERRUPTED = "interrupted", _("Interrupted")
        DECLINED = "declined", _("Declined")
        CANCELLED = "cancelled", _("Cancelled")

    class Outcome(models.TextChoices):
        NONE = "", "-"
        HEALTHY = "healthy", _("No problem found")
        PROBLEMS = "problems", _("Problems found")
        FIXED = "fixed", _("Fixed")
        NOT_FIXED = "not_fixed", _("Not fixed")
        ROLLED_BACK = "rolled_back", _("Rolled back")
        UNVERIFIED = "unverified", _("Applied, not verified")
        ERROR = "error", _("Error")

    class Restart(models.TextChoices):
        NONE = "", _("No restart needed")
        NOW = "now", _("Restart now")
        DELAY = "delay", _("Restart in a few minutes")
        LATER = "later", _("I will restart later")

    TERMINAL = (Status.DONE, Status.ERROR, Status.INTERRUPTED, Status.DECLINED, Status.CANCELLED)
    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RESTARTING, Status.CONNECT)
    # No turn is on a host in these: stopping one leaves nothing half done on the machine.
    CANCELLABLE = (Status.QUEUED, Status.WAITING, Status.CONNECT)
    STEP_ERRORS_MAX = 8000

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.PROTECT,
        related_name="jobs",
    )
    machine = models.ForeignKey(
        Machine, verbose_name=_("machine"), on_delete=models.PROTECT, related_name="jobs"
    )
    article = models.ForeignKey(
        Article, verbose_name=_("article"), on_delete=models.PROTECT, related_name="jobs"
    )
    parent = models.ForeignKey(
        "self",
        verbose_name=_("follows"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
    )  # a fix's diagnosis; a roll-back's fix
    scan = models.ForeignKey(
        Scan,
        verbose_name=_("fleet scan"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="jobs",
    )  # a diagnosis that is one machine of a fleet scan
    kind = models.CharField(_("kind"), max_length=10, choices=Kind, default=Kind.DIAGNOSE)
    status = models.CharField(_("status"), max_length=12, choices=Status, default=Status.QUEUED)
    outcome = models.CharField(
        _("outcome"), max_length=12, choices=Outcome, default=Outcome.NONE, blank=True
    )
    pasted_text = models.TextField(_("pasted text"), blank=True)
    match_score = models.FloatField(_("match score"), null=True, blank=True)
    fix_keys = models.JSONField(
        _("fixes"), default=list, blank=True
    )  # the article fixes a fix job applies
    restart = models.CharField(
        _("restart"), max_length=5, choices=Restart, default=Restart.NONE, blank=True
    )
    restart_delay_min = models.PositiveSmallIntegerField(
        _("restart delay (minutes)"), null=True, blank=True
    )
    plan = models.JSONField(_("plan"), default=dict)  # as sent, with secrets masked
    note = models.TextField(
        _("note"), blank=True
    )  # what the portal did on its own (e.g. an auto roll-back)
    error = models.TextField(_("error"), blank=True)
    # The language of whoever started it: the worker writes its notes and errors in it.
    language = models.CharField(_("language"), max_length=8, blank=True, editable=False)
    # Each distinct error its steps reported, one per line (bounded): the history's text search
    # reads this one column instead of 10 steps per job.
    step_errors = models.TextField(_("step errors"), blank=True, editable=False)
    transcript = models.TextField(_("transcript"), blank=True)  # raw stdout, head and tail kept
    stderr = models.TextField(_("error output"), blank=True)
    step_count = models.PositiveIntegerField(_("step count"), default=0)
    # The engine's bookkeeping (jobs.py): each task run claims the next turn by compare-and-
    # set, so a duplicate message does nothing; wake_at is when the next turn is due (null
    # while a turn runs). A workflow keeps where it is between turns in stage/stage_until.
    # Database defaults too: history's bulk SQL (benches, tests) inserts jobs without them.
    turn = models.PositiveIntegerField(_("turn"), default=0, db_default=0, editable=False)
    wake_at = models.DateTimeField(_("wakes at"), null=True, blank=True, editable=False)
    stage = models.CharField(
        _("stage"), max_length=20, blank=True, default="", db_default="", editable=False
    )
    stage_until = models.DateTimeField(_("stage until"), null=True, blank=True, editable=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("decided by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decided_jobs",
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    # What the helpdesk wrote when deciding on a fix: the employee reads it on the job. A
    # database default too, as for turn and stage: bulk SQL inserts jobs without it.
    decision_note = models.TextField(_("decision note"), blank=True, default="", db_default="")
    handed_over_at = models.DateTimeField(
        _("handed over at"), null=True, blank=True
    )  # sent to the helpdesk
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        # Approving is its own permission (not view_job): seeing every job is not deciding.
        permissions = [("approve_fix", _("Can approve or decline a fix that needs approval"))]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="job_status_heartbeat"),
            # Helpdesk history: newest first, keyset on (created_at, id), one
            # index per filter so each filter walks its own rows in order.
            models.Index(fields=["created_at", "id"], name="job_created_id"),
            models.Index(fields=["user", "created_at", "id"], name="job_user_created"),
            models.Index(fields=["machine", "created_at", "id"], name="job_machine_created"),
            models.Index(fields=["article", "created_at", "id"], name="job_article_created"),
            models.Index(fields=["status", "created_at", "id"], name="job_status_created"),
            models.Index(fields=["kind", "created_at", "id"], name="job_kind_created"),
            models.Index(fields=["outcome", "created_at", "id"], name="job_outcome_created"),
        ]
        constraints = [
            # The per-machine lock: the database refuses a second active job for a machine.
            models.UniqueConstraint(
                fields=["machine"],
                condition=models.Q(status__in=["queued", "running", "restarting", "connect"]),
                name="one_active_job_per_machine",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.machine_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.TERMINAL

    def finish(self, status: Status, outcome: Outcome, error: str = "") -> bool:
        """Move an active or waiting job to a terminal state once; False if it already ended."""
        now = timezone.now()
        error = error.replace("\x00", "\\0")  # host output may carry NUL; PostgreSQL refuses it
        updated = Job.objects.filter(
            pk=self.pk, status__in=[*self.ACTIVE, self.Status.WAITING]
        ).update(
            status=status, outcome=outcome, error=error[:4000], finished_at=now, heartbeat_at=now
        )
        if updated:
            self.status, self.outcome, self.error, self.finished_at = status, outcome, error, now
        return bool(updated)

    def note_step_error(self, error: str) -> None:
        """Add a step's error to step_errors (what the history searches), unless already there.

        One line per distinct error (a host that denies access denies it to every step), at
        most STEP_ERRORS_MAX characters: past that, the steps keep their own errors.
        """
        line = " ".join(error.replace("\x00", "\\0").split())[:4000]
        if not line or line in self.step_errors:
            return
        if len(self.step_errors) + len(line) + 1 > self.STEP_ERRORS_MAX:
            return
        joined = Case(
            When(step_errors="", then=Value(line)),
            default=Concat(F("step_errors"), Value("\n" + line)),
            output_field=models.TextField(),
        )
        Job.objects.filter(pk=self.pk).exclude(step_errors__contains=line).update(
            step_errors=joined
        )
        self.step_errors = f"{self.step_errors}\n{line}" if self.step_errors else line

    def cancel(self, reason: str) -> bool:
        """End a job no turn is running (``CANCELLABLE``) as cancelled, once; False if it had
        moved on (a worker claimed it meanwhile) or already ended. Frees the machine."""
        now = timezone.now()
        updated = Job.objects.filter(pk=self.pk, status__in=self.CANCELLABLE).update(
            status=self.Status.CANCELLED,
            outcome=self.Outcome.NONE,
            error=reason[:4000],
            finished_at=now,
            heartbeat_at=now,
            wake_at=None,
        )
        if updated:
            self.status, self.outcome, self.error, self.finished_at = (
                self.Status.CANCELLED,
                self.Outcome.NONE,
                reason,
                now,
            )
        return bool(updated)

    def mark_interrupted(self, reason: str) -> bool:
        return self.finish(self.Status.INTERRUPTED, self.Outcome.ERROR, reason)

    def move(self, old: Status, new: Status) -> bool:
        """Compare-and-set the status; False if another process moved it first."""
        now = timezone.now()
        moved = Job.objects.filter(pk=self.pk, status=old).update(status=new, heartbeat_at=now)
        if moved:
            self.status, self.heartbeat_at = new, now
        return bool(moved)


class AuditEntry(models.Model):
    """Who did what to which machine: every fix request, approval, decline, fix and roll-back,
    and every change of where a machine's credential is sent."""

    class Action(models.TextChoices):
        FIX_REQUESTED = "fix_requested", _("Fix requested")
        FIX_APPROVED = "fix_approved", _("Fix approved")
        FIX_DECLINED = "fix_declined", _("Fix declined")
        FIX_APPLIED = "fix_applied", _("Fix applied")
        ROLLBACK = "rollback", _("Rolled back")
        AUTO_ROLLBACK = "auto_rollback", _("Rolled back automatically")
        HANDED_OVER = "handed_over", _("Handed to the helpdesk")
        CANCELLED = "cancelled", _("Cancelled")
        TARGET_CHANGED = "target_changed", _("Connection settings changed")  # no job

    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
    )  # null: the portal itself
    action = models.CharField(_("action"), max_length=20, choices=Action)
    job = models.ForeignKey(
        Job,
        verbose_name=_("job"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit",
    )  # null: an act on the machine itself (its connection settings)
    machine = models.ForeignKey(
        Machine, verbose_name=_("machine"), on_delete=models.PROTECT, related_name="audit"
    )
    changes = models.JSONField(
        _("changes"), default=list, blank=True
    )  # [{"setting", "from", "to"}]
    detail = models.TextField(_("detail"), blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.machine_id}"


class StepResult(models.Model):
    """What the host reported for one step of a job, and the portal's verdict on it."""

    class Verdict(models.TextChoices):
        PASS = "pass", _("Pass")
        FAIL = "fail", _("Fail")
        ERROR = "error", _("Error")
        UNKNOWN = "unknown", _("Could not tell")  # the host could not find out (cannot)
        DONE = "done", _("Done")  # a fix step that ran

    class Phase(models.TextChoices):
        CHECK = "check", _("Check")
        FIX = "fix", _("Fix")
        VERIFY = "verify", _("Verify")
        ROLLBACK = "rollback", _("Roll back")

    job = models.ForeignKey(
        Job, verbose_name=_("job"), on_delete=models.CASCADE, related_name="steps"
    )
    step_id = models.CharField(_("step ID"), max_length=20)
    phase = models.CharField(_("phase"), max_length=8, choices=Phase, default=Phase.CHECK)
    position = models.PositiveIntegerField(
        _("position"),
    )
    kb_check = models.ForeignKey(
        Check, verbose_name=_("KB check"), on_delete=models.SET_NULL, null=True, blank=True
    )
    kind = models.CharField(_("kind"), max_length=40)
    facts = models.JSONField(_("facts"), default=dict, blank=True)
    before = models.JSONField(_("before"), null=True, blank=True)
    after = models.JSONField(_("after"), null=True, blank=True)
    changed = models.BooleanField(_("changed"), null=True)
    verdict = models.CharField(_("verdict"), max_length=7, choices=Verdict)
    error = models.TextField(_("error"), blank=True)
    # Why the host could not tell: {"reason", "need"} from the runner's line (catalog.RIGHTS).
    cannot = models.JSONField(_("why it could not tell"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        ordering = ["job", "position"]
        verbose_name = _("step result")
        verbose_name_plural = _("step results")
        constraints = [
            models.UniqueConstraint(fields=["job", "step_id"], name="uniq_job_step"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}/{self.step_id} {self.verdict}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        adding = self._state.adding
        super().save(*args, **kwargs)
        if adding and self.error:
            self.job.note_step_error(self.error)


class UnmatchedPaste(models.Model):
    """A searched text the matcher had no confident article for: a blind spot of the KB.

    Recorded when an employee submits a search (not for every keystroke of the live
    suggestions); equal texts after normalisation are counted together.
    """

    digest = models.CharField(
        _("digest"), max_length=64, unique=True
    )  # sha256 of the normalised text
    text = models.TextField(
        _("text"),
    )  # the first paste of it, cut to 2,000 characters
    best_score = models.FloatField(_("best score"), null=True, blank=True)
    count = models.PositiveIntegerField(_("count"), default=1)
    first_seen = models.DateTimeField(_("first seen"), default=timezone.now)
    last_seen = models.DateTimeField(_("last seen"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-last_seen"]
        verbose_name = _("unmatched paste")
        verbose_name_plural = _("unmatched pastes")

    def __str__(self) -> str:
        return self.text[:60]


class HandOver(models.Model):
    """An employee's case for the helpdesk: a job (or a text nothing matched) and its thread.

    Status moves only through ``handovers.py``: OPEN -> TAKEN (someone of the helpdesk holds
    it) -> CLOSED. ``language`` is the employee's when they handed it over: the e-mails they
    get are written in it.
    """

    class Status(models.TextChoices):
        OPEN = "open", _("Waiting for the helpdesk")
        TAKEN = "taken", _("The helpdesk is on it")
        CLOSED = "closed", _("Closed")

    NOTE_MAX = 4000
    POLL_SECONDS = 10  # how often an open hand-over's page asks for the helpdesk's answer

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.PROTECT,
        related_name="handovers",
    )
    job = models.ForeignKey(
        Job,
        verbose_name=_("job"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="handovers",
    )
    machine = models.ForeignKey(
        Machine,
        verbose_name=_("machine"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="handovers",
    )
    pasted_text = models.TextField(_("pasted text"), blank=True)
    status = models.CharField(_("status"), max_length=8, choices=Status, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("assignee"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assigned_handovers",
    )
    language = models.CharField(_("language"), max_length=8, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(
        _("updated at"), default=timezone.now
    )  # the last message or move
    taken_at = models.DateTimeField(_("taken at"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("hand-over")
        verbose_name_plural = _("hand-overs")
        indexes = [
            models.Index(fields=["status", "created_at"], name="handover_status_created"),
            models.Index(fields=["assignee", "status"], name="handover_assignee_status"),
        ]
        constraints = [
            # One hand-over per job: a second click finds the first.
            models.UniqueConstraint(
                fields=["job"], condition=models.Q(job__isnull=False), name="one_handover_per_job"
            ),
        ]

    def __str__(self) -> str:
        return f"hand-over #{self.pk} {self.status}"

    @property
    def is_closed(self) -> bool:
        return self.status == self.Status.CLOSED


class HandOverMessage(models.Model):
    """One message of a hand-over's thread: the employee's note or the helpdesk's reply."""

    handover = models.ForeignKey(
        HandOver, verbose_name=_("hand-over"), on_delete=models.CASCADE, related_name="messages"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("author"), on_delete=models.PROTECT
    )
    from_helpdesk = models.BooleanField(_("from the helpdesk"), default=False)
    body = models.TextField(
        _("message"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("hand-over message")
        verbose_name_plural = _("hand-over messages")

    def __str__(self) -> str:
        return self.body[:60]
