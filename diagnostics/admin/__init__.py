"""Django admin: machines and credentials, the knowledge base, and (read-only) jobs."""

from csp.constants import SELF
from csp.decorators import csp_replace
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from diagnostics import access, kbindex, kbversions, matching, targets
from diagnostics.admin import articleforms, stepforms
from diagnostics.admin import fields as kbfields
from diagnostics.models import (
    Article,
    AuditEntry,
    Check,
    Credential,
    Fix,
    Job,
    Machine,
    Secret,
    Signature,
    StepResult,
    UnmatchedPaste,
    active_lang,
)


def _fits(value) -> bool:
    """Whether ``value`` could be a database id; text that is no number at all is left to
    Django's own check ("select a valid choice")."""
    try:
        return -(2**63) <= int(str(value)) < 2**63
    except ValueError:
        return True


class BoundedModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    """A choice whose id is past any database integer is simply not a valid choice: for
    ``pk__in`` SQLite raised OverflowError, a 500. (A single choice is fine: Django finds no
    row for an out-of-range id.)"""

    def _check_values(self, value):
        for pk in value:
            if not _fits(pk):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": pk},
                )
        return super()._check_values(value)


class BoundedIdsMixin:
    """Admin forms whose many-to-many fields refuse ids past a database integer (found by
    tests/test_fuzz.py, issue #16)."""

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs.setdefault("form_class", BoundedModelMultipleChoiceField)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


# The article preview may be framed by the portal's own edit page (CSP and X-Frame-Options).
FRAMED_BY_SELF = {"frame-ancestors": [SELF]}


class WriteOnlyForm(forms.ModelForm):
    """A form with one secret field that is never rendered back: blank keeps the stored value."""

    secret_field = "password"
    secret = forms.CharField(
        label=_("new value"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored encrypted and never shown again. Leave blank to keep the current one."),
    )

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("secret"):
            self.add_error("secret", _("Required for a new entry."))
        return data


class CredentialForm(WriteOnlyForm):
    class Meta:
        model = Credential
        fields = ["name", "username", "address_pattern", "allow_unverified"]


class SecretForm(WriteOnlyForm):
    class Meta:
        model = Secret
        fields = ["name", "description"]


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = ["name", "username", "updated_at"]
    search_fields = ["name", "username"]

    def save_model(self, request, obj, form, change):
        if form.cleaned_data.get("secret"):
            obj.set_password(form.cleaned_data["secret"])
        super().save_model(request, obj, form, change)


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ["name", "description", "updated_at"]

    def save_model(self, request, obj, form, change):
        if form.cleaned_data.get("secret"):
            obj.set_value(form.cleaned_data["secret"])
        super().save_model(request, obj, form, change)


@admin.register(Machine)
class MachineAdmin(BoundedIdsMixin, admin.ModelAdmin):
    """Owners for the helpdesk; where the credential goes (the target) for administrators.

    The helpdesk sees the target read-only and adds machines by CSV import, where the
    credential's address pattern decides; every target an administrator saves is bound and
    audited (``targets.save``).
    """

    list_display = [
        "name",
        "address",
        "port",
        "scheme",
        "credential",
        "approved",
        "channel",
        "agent_last_seen",
    ]
    list_select_related = ["credential"]
    search_fields = ["name", "address", "owners__username"]
    list_filter = ["scheme", "channel"]
    filter_horizontal = ["owners"]
    actions = ["approve_targets"]
    # What the agent reports (issue #14); enrolment and revocation are in the console.
    REPORTED = ["agent_last_seen", "agent_version"]

    @admin.display(boolean=True, description=_("approved"))
    def approved(self, obj: Machine) -> bool:
        return obj.bound_target == obj.target_signature() or obj.credential.covers(obj.address)

    def get_readonly_fields(self, request, obj=None):
        if access.can_change_machine_targets(request.user):
            return ["bound_by", "bound_at", *self.REPORTED]
        return [*Machine.TARGET_FIELDS, "bound_by", "bound_at", *self.REPORTED]

    def has_add_permission(self, request):
        return super().has_add_permission(request) and access.can_change_machine_targets(
            request.user
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not access.can_change_machine_targets(request.user):
            actions.pop("approve_targets", None)
        return actions

    def save_model(self, request, obj, form, change):
        before = None
        if change:
            before = targets.snapshot(Machine.objects.select_related("credential").get(pk=obj.pk))
        targets.save(obj, request.user, before)

    @admin.action(description=_("Approve the connection settings of the selected machines"))
    def approve_targets(self, request, queryset):
        try:
            for machine in queryset.select_related("credential"):
                targets.approve(machine, request.user)
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        count = queryset.count()
        self.message_user(
            request,
            ngettext(
                "Approved the connection settings of %(n)s machine.",
                "Approved the connection settings of %(n)s machines.",
                count,
            )
            % {"n": count},
        )


class SignatureInline(admin.TabularInline):
    model = Signature
    formset = articleforms.SignatureFormSet
    extra = 0
    classes = ["collapse"]
    fields = ["lang", "text", "source", "verified"]
    formfield_overrides = kbfields.text_overrides(rows=2)


class CheckInline(admin.StackedInline):
    """Checks with typed fields from the catalog (``stepforms``); no JSON by hand."""

    model = Check
    form = stepforms.CheckForm
    formset = articleforms.CheckFormSet
    template = "admin/diagnostics/edit_inline/stacked_steps.html"
    fieldsets = stepforms.CHECK_FIELDSETS
    extra = 0
    classes = ["collapse"]
    formfield_overrides = kbfields.text_overrides(rows=3)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("article")  # each row's title

    def get_formset(self, request, obj=None, **kwargs):
        self.article = obj  # inline instances are made per request
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "fix":  # only this article's fixes, read once for every check form
            kwargs["queryset"] = Fix.objects.filter(article=self.article).select_related("article")
            field = super().formfield_for_foreignkey(db_field, request, **kwargs)
            field.choices = list(field.choices)
            return field
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class FixInline(admin.StackedInline):
    model = Fix
    form = stepforms.FixForm
    formset = articleforms.FixFormSet
    template = "admin/diagnostics/edit_inline/stacked_steps.html"
    fieldsets = stepforms.FIX_FIELDSETS
    extra = 0
    classes = ["collapse"]


class RawCheckInline(CheckInline):
    """The stored JSON, for superusers who ask for it (``?raw=1``)."""

    form = stepforms.RawCheckForm
    fieldsets = None


class RawFixInline(FixInline):
    form = stepforms.RawFixForm
    fieldsets = None


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["slug", "title_ja", "status", "error_codes", "updated_at"]
    list_filter = ["status"]
    search_fields = ["slug", "title_ja", "title_en", "signatures__text"]
    inlines = [SignatureInline, FixInline, CheckInline]
    change_list_template = "admin/diagnostics/article/change_list.html"
    change_form_template = "admin/diagnostics/article/change_form.html"
    form = articleforms.ArticleForm
    formfield_overrides = kbfields.text_overrides(rows=6)
    fieldsets = [
        (None, {"fields": ["slug", "status", "error_codes", "title_ja", "title_en"]}),
        (
            _("Article text (日本語)"),
            {
                "fields": ["summary_ja", "causes_ja", "steps_ja", "notes_ja"],
                "classes": ["collapse"],
            },
        ),
        (
            _("Article text (English)"),
            {
                "fields": ["summary_en", "causes_en", "steps_en", "notes_en"],
                "classes": ["collapse"],
            },
        ),
        (
            _("Inferred causes, manual steps and sources"),
            {"fields": ["inferred", "manual_steps", "sources"], "classes": ["collapse"]},
        ),
    ]

    class Media:
        css = {"all": ["diagnostics/kb-editor.css"]}
        js = ["diagnostics/kb-editor.js"]

    def add_view(self, request, form_url="", extra_context=None):
        extra = {"facts": kbfields.facts_by_kind(), **(extra_context or {})}
        return super().add_view(request, form_url, extra)

    def get_inlines(self, request, obj):
        """Typed forms for everyone; the raw JSON only for a superuser who asks for it."""
        if request.user.is_superuser and request.GET.get("raw") == "1":
            return [SignatureInline, RawFixInline, RawCheckInline]
        return self.inlines

    def save_formset(self, request, form, formset, change):
        if formset.model is Fix:  # an edit of a fix's steps resets their approval
            for fix_form in formset.forms:
                kept = fix_form.cleaned_data and not fix_form.cleaned_data.get("DELETE")
                if kept and fix_form.has_changed() and fix_form.resets_review():
                    fix_form.instance.steps_changed_by(request.user)
        super().save_formset(request, form, formset, change)

    # Every change is kept as a version and tells all web and worker processes to rebuild
    # their matcher index.
    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        kbversions.record(form.instance, request.user)
        kbindex.bump_version()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        article = self.get_object(request, object_id)
        extra = {"awaiting_fixes": [], "versions_count": 0, "facts": kbfields.facts_by_kind()}
        if article is not None:
            awaiting = article.fixes.filter(steps_author__isnull=False, steps_approved_by=None)
            extra["awaiting_fixes"] = [
                (fix, access.may_approve_steps(request.user, fix))
                for fix in awaiting.select_related("steps_author")
            ]
            extra["versions_count"] = article.versions.count()
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        kbindex.bump_version()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        kbindex.bump_version()

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path("try/", view(self.try_text_view), name="diagnostics_article_try"),
            path(
                "<int:object_id>/versions/",
                view(self.versions_view),
                name="diagnostics_article_versions",
            ),
            path(
                "<int:object_id>/versions/<int:number>/restore/",
                view(require_POST(self.restore_view)),
                name="diagnostics_article_restore",
            ),
            path(
                "<int:object_id>/preview/",
                # Shown in a frame beside the edit form (same origin only), or on its own.
                view(csp_replace(FRAMED_BY_SELF)(xframe_options_sameorigin(self.preview_view))),
                name="diagnostics_article_preview",
            ),
            path(
                "<int:object_id>/fixes/<int:fix_id>/approve-steps/",
                view(require_POST(self.approve_steps_view)),
                name="diagnostics_article_approve_steps",
            ),
        ]
        return own + super().get_urls()

    def _article_to_change(self, request, object_id) -> Article:
        article = self.get_object(request, str(object_id))
        if article is None or not self.has_change_permission(request, article):
            raise Http404
        return article

    def versions_view(self, request, object_id):
        """Every saved version of the article: who, when, and what changed as a diff."""
        article = self._article_to_change(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": article,
            "title": _("Versions of %(slug)s") % {"slug": article.slug},
            "history": kbversions.history(article),
        }
        return TemplateResponse(request, "admin/diagnostics/article/versions.html", context)

    def preview_view(self, request, object_id):
        """The article as the employee will see it, in Japanese and English, with the
        matcher's answer for a text and the KB admin's machines to try the checks on."""
        article = self._article_to_change(request, object_id)
        text = request.GET.get("q", "")[:100_000]
        result = None
        if text.strip():
            index = matching.build_index(kbindex.article_dicts(include_drafts=True))
            result = matching.match(index, text, top=5, lang=active_lang())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": article,
            "title": _("Preview of %(slug)s") % {"slug": article.slug},
            "pages": [(lang, name, _employee_page(request, article, lang)) for lang, name in LANGS],
            "text": text,
            "result": result,
            "embed": bool(request.GET.get("embed")),
            "rank": next(
                (i for i, m in enumerate(result.matches, 1) if m.article == article.slug), None
            )
            if result
            else None,
            "machines": request.user.machines.all(),
        }
        return TemplateResponse(request, "admin/diagnostics/article/preview.html", context)

    def restore_view(self, request, object_id, number):
        """One click: the chosen version becomes the article again, as a draft."""
        article = self._article_to_change(request, object_id)
        version = get_object_or_404(article.versions, number=number)
        kbversions.restore(version, request.user)
        self.message_user(
            request,
            _("Version %(n)s restored as a draft: publish it when it is right.") % {"n": number},
            messages.SUCCESS,
        )
        return redirect("admin:diagnostics_article_change", article.pk)

    def approve_steps_view(self, request, object_id, fix_id):
        """A second KB admin approves a fix's changed steps (never their author)."""
        article = self._article_to_change(request, object_id)
        fix = get_object_or_404(article.fixes, pk=fix_id)
        decision = access.may_approve_steps(request.user, fix)
        if not decision:
            self.message_user(request, decision.reason, messages.ERROR)
        else:
            # Compare-and-set: a change of the steps since the page was read wins.
            Fix.objects.filter(
                pk=fix.pk, steps_author=fix.steps_author_id, steps_approved_by=None
            ).update(steps_approved_by=request.user)
            self.message_user(
                request,
                _("The steps of %(key)s are approved.") % {"key": fix.key},
                messages.SUCCESS,
            )
        return redirect("admin:diagnostics_article_change", article.pk)

    def try_text_view(self, request):
        """Rank every article, drafts included, for a pasted text: scores and why."""
        text = request.POST.get("text", "") if request.method == "POST" else ""
        result = None
        if text.strip():
            lang = active_lang()
            index = matching.build_index(kbindex.article_dicts(include_drafts=True))
            result = matching.match(index, text, top=10, lang=lang)
        statuses = dict(Article.objects.values_list("slug", "status"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Try a text against the matcher"),
            "text": text,
            "result": result,
            "statuses": statuses,
            "threshold": matching.THRESHOLD,
            "highlight": result.matches[0].highlight if result and result.matches else [],
        }
        return TemplateResponse(request, "admin/diagnostics/article/try.html", context)


LANGS = (("ja", "日本語"), ("en", "English"))


def _employee_page(request, article: Article, lang: str) -> str:
    """The employee's article page body in ``lang`` (Markdown rendered and sanitised)."""
    with translation.override(lang):
        return render_to_string(
            "diagnostics/article.html#article-body",
            {"article": article, "machines": [], "machine_id": "", "q": "", "score": ""},
            request=request,
        )


class StepResultInline(admin.TabularInline):
    model = StepResult
    extra = 0
    can_delete = False
    fields = ["position", "step_id", "kind", "verdict", "facts", "error", "duration_ms"]
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "outcome", "machine", "article", "user", "created_at"]
    list_filter = ["status", "outcome", "kind"]
    search_fields = ["machine__name", "user__username", "pasted_text"]
    inlines = [StepResultInline]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail is evidence: readable, never editable or deletable from the admin."""

    list_display = ["at", "action", "machine", "actor", "job"]
    list_filter = ["action"]
    search_fields = ["machine__name", "actor__username", "detail"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UnmatchedPaste)
class UnmatchedPasteAdmin(admin.ModelAdmin):
    list_display = ["text", "count", "best_score", "last_seen"]
    search_fields = ["text"]
    readonly_fields = ["digest", "text", "best_score", "count", "first_seen", "last_seen"]

    def has_add_permission(self, request):
        return False
