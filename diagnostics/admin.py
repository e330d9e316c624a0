"""Django admin: machines and credentials, the knowledge base, and (read-only) jobs."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from diagnostics import access, catalog, kbindex, matching, targets
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

    list_display = ["name", "address", "port", "scheme", "credential", "approved"]
    list_select_related = ["credential"]
    search_fields = ["name", "address", "owners__username"]
    list_filter = ["scheme"]
    filter_horizontal = ["owners"]
    actions = ["approve_targets"]

    @admin.display(boolean=True, description=_("approved"))
    def approved(self, obj: Machine) -> bool:
        return obj.bound_target == obj.target_signature() or obj.credential.covers(obj.address)

    def get_readonly_fields(self, request, obj=None):
        if access.can_change_machine_targets(request.user):
            return ["bound_by", "bound_at"]
        return [*Machine.TARGET_FIELDS, "bound_by", "bound_at"]

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


class CheckForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=[(k, k) for k in catalog.CHECK_KINDS])

    class Meta:
        model = Check
        fields = [
            "key",
            "position",
            "title_ja",
            "title_en",
            "kind",
            "args",
            "role",
            "codes",
            "when",
            "expect",
            "explanation_ja",
            "explanation_en",
            "fix",
        ]

    def clean(self):
        data = super().clean()
        typed = ("kind", "args", "expect")
        if any(name in self.errors for name in typed):
            return data  # e.g. args that are not JSON: that error says it all
        # The validator of KB files, so the admin refuses exactly what kb_import refuses,
        # with the same words: "expect[0].fact: service has no fact 'state'".
        check = {name: data.get(name) for name in (*typed, "role")}
        for problem in catalog.check_problems("", check):
            field = next((n for n in typed if problem.startswith(n)), None)
            self.add_error(field, problem)
        return data


class FixForm(forms.ModelForm):
    class Meta:
        model = Fix
        fields = [
            "key",
            "position",
            "title_ja",
            "title_en",
            "steps",
            "restart_required",
            "needs_approval",
        ]

    def clean_steps(self):
        steps = self.cleaned_data["steps"]
        problems = catalog.fix_steps_problems("steps", steps)  # as kb_import says it
        if problems:
            raise forms.ValidationError(problems)
        return steps


class SignatureInline(admin.TabularInline):
    model = Signature
    extra = 0


class CheckInline(admin.StackedInline):
    model = Check
    form = CheckForm
    extra = 0

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "fix":  # each choice is labelled with its article's slug
            kwargs["queryset"] = Fix.objects.select_related("article")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class FixInline(admin.StackedInline):
    model = Fix
    form = FixForm
    extra = 0


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["slug", "title_ja", "status", "error_codes", "updated_at"]
    list_filter = ["status"]
    search_fields = ["slug", "title_ja", "title_en", "signatures__text"]
    inlines = [SignatureInline, FixInline, CheckInline]
    change_list_template = "admin/diagnostics/article/change_list.html"

    # Every change tells all web and worker processes to rebuild their matcher index.
    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        kbindex.bump_version()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        kbindex.bump_version()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        kbindex.bump_version()

    def get_urls(self):
        own = [
            path(
                "try/",
                self.admin_site.admin_view(self.try_text_view),
                name="diagnostics_article_try",
            )
        ]
        return own + super().get_urls()

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
