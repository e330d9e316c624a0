"""Machines and their credentials, the knowledge base, and the jobs run against machines."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from diagnostics import vault

NAME_VALIDATOR = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", _("Letters, digits, . _ -"))


def _lang() -> str:
    return "en" if (get_language() or "ja").startswith("en") else "ja"


class Bilingual:
    """Mixin: ``obj.tr("title")`` returns title_ja or title_en for the active language."""

    def tr(self, field: str) -> str:
        lang = _lang()
        value = getattr(self, f"{field}_{lang}", "")
        return value or getattr(self, f"{field}_{'en' if lang == 'ja' else 'ja'}", "")


class Credential(models.Model):
    """A WinRM account. The password is encrypted at rest and never rendered back."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    username = models.CharField(_("user name"), max_length=200)
    password_encrypted = models.TextField(editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("credential")
        verbose_name_plural = _("credentials")

    def __str__(self) -> str:
        return self.name

    def set_password(self, raw: str) -> None:
        self.password_encrypted = vault.encrypt(raw)

    def get_password(self) -> str:
        return vault.decrypt(self.password_encrypted)


class Secret(models.Model):
    """A value a fix needs (e.g. the company L2TP PSK), encrypted; referenced as {secret: name}."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=200, blank=True)
    value_encrypted = models.TextField(editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("secret")
        verbose_name_plural = _("secrets")

    def __str__(self) -> str:
        return self.name

    def set_value(self, raw: str) -> None:
        self.value_encrypted = vault.encrypt(raw)

    def get_value(self) -> str:
        return vault.decrypt(self.value_encrypted)


class Machine(models.Model):
    """A Windows endpoint reachable over WinRM, owned by one or more employees."""

    class Scheme(models.TextChoices):
        HTTP = "http", "HTTP (NTLM, encrypted)"
        HTTPS = "https", "HTTPS"

    name = models.CharField(_("name"), max_length=63, unique=True, validators=[NAME_VALIDATOR])
    address = models.CharField(_("address"), max_length=253)
    port = models.PositiveIntegerField(
        _("port"), default=5986, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    scheme = models.CharField(_("scheme"), max_length=5, choices=Scheme, default=Scheme.HTTPS)
    verify_tls = models.BooleanField(_("verify TLS certificate"), default=True)
    credential = models.ForeignKey(Credential, on_delete=models.PROTECT, related_name="machines")
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="machines", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("machine")
        verbose_name_plural = _("machines")

    def __str__(self) -> str:
        return self.name


class Article(Bilingual, models.Model):
    """A knowledge-base article: what an error means, why it happens, what to check and fix."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")

    slug = models.SlugField(max_length=100, unique=True)
    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    error_codes = models.JSONField(default=list, blank=True)
    title_ja = models.CharField(max_length=200)
    title_en = models.CharField(max_length=200)
    summary_ja = models.TextField(blank=True)
    summary_en = models.TextField(blank=True)
    causes_ja = models.TextField(blank=True)
    causes_en = models.TextField(blank=True)
    steps_ja = models.TextField(blank=True)
    steps_en = models.TextField(blank=True)
    notes_ja = models.TextField(blank=True)
    notes_en = models.TextField(blank=True)
    manual_steps = models.JSONField(default=list, blank=True)
    sources = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

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

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="signatures")
    lang = models.CharField(max_length=2, choices=Lang)
    text = models.TextField()
    source = models.CharField(max_length=500, blank=True)
    verified = models.BooleanField(default=True)

    class Meta:
        ordering = ["article", "id"]

    def __str__(self) -> str:
        return self.text[:60]


class Fix(Bilingual, models.Model):
    """Typed fix steps an article offers for a failed check."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="fixes")
    key = models.SlugField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    title_ja = models.CharField(max_length=200)
    title_en = models.CharField(max_length=200)
    steps = models.JSONField(default=list)  # [{"kind": ..., "args": {...}}]
    restart_required = models.BooleanField(default=False)
    needs_approval = models.BooleanField(default=False)

    class Meta:
        ordering = ["article", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "key"], name="uniq_fix_key")]

    def __str__(self) -> str:
        return f"{self.article.slug}/{self.key}"


class Check(Bilingual, models.Model):
    """One automated check: a typed step, the expectation its facts must meet, and words."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="checks")
    key = models.SlugField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    title_ja = models.CharField(max_length=200)
    title_en = models.CharField(max_length=200)
    kind = models.CharField(max_length=40)
    args = models.JSONField(default=dict, blank=True)
    expect = models.JSONField(default=list)
    explanation_ja = models.TextField(blank=True)
    explanation_en = models.TextField(blank=True)
    fix = models.ForeignKey(Fix, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["article", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "key"], name="uniq_check_key")]

    def __str__(self) -> str:
        return f"{self.article.slug}/{self.key}"


class Job(models.Model):
    """One run of typed steps on one machine: a diagnosis, a fix or a roll-back.

    Status moves QUEUED -> RUNNING -> DONE | ERROR | INTERRUPTED, and only through the methods
    below and jobs.py; the outcome says what a finished job found.
    """

    class Kind(models.TextChoices):
        DIAGNOSE = "diagnose", _("Diagnosis")
        FIX = "fix", _("Fix")
        ROLLBACK = "rollback", _("Roll back")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        ERROR = "error", _("Could not run")
        INTERRUPTED = "interrupted", _("Interrupted")

    class Outcome(models.TextChoices):
        NONE = "", "-"
        HEALTHY = "healthy", _("No problem found")
        PROBLEMS = "problems", _("Problems found")
        FIXED = "fixed", _("Fixed")
        NOT_FIXED = "not_fixed", _("Not fixed")
        ERROR = "error", _("Error")

    TERMINAL = (Status.DONE, Status.ERROR, Status.INTERRUPTED)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs"
    )
    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="jobs")
    article = models.ForeignKey(Article, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=10, choices=Kind, default=Kind.DIAGNOSE)
    status = models.CharField(max_length=12, choices=Status, default=Status.QUEUED)
    outcome = models.CharField(max_length=10, choices=Outcome, default=Outcome.NONE, blank=True)
    pasted_text = models.TextField(blank=True)
    match_score = models.FloatField(null=True, blank=True)
    plan = models.JSONField(default=dict)  # as sent, with secrets masked
    error = models.TextField(blank=True)
    transcript = models.TextField(blank=True)  # raw stdout, head and tail kept
    stderr = models.TextField(blank=True)
    step_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="job_status_heartbeat")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.machine_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.TERMINAL

    def finish(self, status: Status, outcome: Outcome, error: str = "") -> bool:
        """Move a running job to a terminal state once; False if it already ended."""
        now = timezone.now()
        updated = Job.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            status=status, outcome=outcome, error=error[:4000], finished_at=now, heartbeat_at=now
        )
        if updated:
            self.status, self.outcome, self.error, self.finished_at = status, outcome, error, now
        return bool(updated)

    def mark_interrupted(self, reason: str) -> bool:
        return self.finish(self.Status.INTERRUPTED, self.Outcome.ERROR, reason)


class StepResult(models.Model):
    """What the host reported for one step of a job, and the portal's verdict on it."""

    class Verdict(models.TextChoices):
        PASS = "pass", _("Pass")
        FAIL = "fail", _("Fail")
        ERROR = "error", _("Error")
        DONE = "done", _("Done")  # a fix step that ran

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    step_id = models.CharField(max_length=20)
    position = models.PositiveIntegerField()
    kb_check = models.ForeignKey(Check, on_delete=models.SET_NULL, null=True, blank=True)
    kind = models.CharField(max_length=40)
    facts = models.JSONField(default=dict, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    changed = models.BooleanField(null=True)
    verdict = models.CharField(max_length=5, choices=Verdict)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step_id"], name="uniq_job_step"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}/{self.step_id} {self.verdict}"
