"""Template helpers of the article editor in the admin (diagnostics/admin/stepforms.py)."""

from django import template

register = template.Library()


@register.filter
def shows_fieldset(form, classes: str) -> bool:
    """Render a kind's argument fieldset only where that kind is chosen.

    The other kinds' fieldsets come from the inline's empty form when the editor's script
    needs them: rendering every kind for every row made the seed article's page 1.4 MB.
    """
    names = classes.split()
    if "step-args" not in names or "__prefix__" in form.prefix:
        return True
    slot = next(n.removeprefix("slot-") for n in names if n.startswith("slot-"))
    kind = next(n.removeprefix("kind-") for n in names if n.startswith("kind-"))
    return getattr(form, "chosen_kinds", {}).get(slot) == kind
