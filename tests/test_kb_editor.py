"""The article editor in the admin: typed forms from the catalog, versions, second approval."""

from django.urls import reverse

from diagnostics.kbstore import export_dir
from tests.adminforms import form_data
from tests.conftest import ROOT

SEED = "l2tp-ipsec-psk-negotiation"


def change_url(article) -> str:
    return reverse("admin:diagnostics_article_change", args=[article.pk])


def inline_index(data: dict, prefix: str, key: str) -> int:
    return next(
        int(name.split("-")[1])
        for name, values in data.items()
        if name.startswith(f"{prefix}-") and name.endswith("-key") and values == [key]
    )


def test_every_shipped_article_saved_unchanged_through_the_typed_forms_exports_byte_identical(
    client, kb_admin, kb, tmp_path
):
    client.force_login(kb_admin)
    for article in kb.values():
        response = client.post(change_url(article), form_data(client, change_url(article)))
        assert response.status_code == 302, (article.slug, response.content.decode()[:4000])
    export_dir(tmp_path)
    for shipped in sorted((ROOT / "kb").glob("*.yaml")):
        exported = (tmp_path / shipped.name).read_text(encoding="utf-8")
        assert exported == shipped.read_text(encoding="utf-8"), shipped.name
