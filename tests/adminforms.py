"""Admin forms as a browser posts them back: for the tests of the article editor."""

from html.parser import HTMLParser


class _FormParser(HTMLParser):
    """A change form's fields as a browser would post them (several values per name kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[tuple[str, str]] = []
        self.textarea: list | None = None
        self.select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if "disabled" in a:  # a browser posts no disabled field
            return
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.data.append((name, a.get("value", "on")))
            else:
                self.data.append((name, a.get("value", "")))
        elif tag == "textarea" and name:
            self.textarea = [name, ""]
            self.data.append(self.textarea)
        elif tag == "select" and name:
            self.select = name if "disabled" not in a else None
        elif tag == "option" and self.select and "selected" in a:
            self.data.append((self.select, a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "textarea":
            self.textarea[1] = self.textarea[1].removeprefix("\n")  # the newline after <textarea>
            self.textarea = None
        elif tag == "select":
            self.select = None

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea[1] += data


def form_data(client, url: str) -> dict[str, list[str]]:
    """The form on ``url`` as a browser posts it back unchanged."""
    page = client.get(url)
    assert page.status_code == 200
    parser = _FormParser()
    parser.feed(page.content.decode())
    data: dict[str, list[str]] = {}
    for name, value in parser.data:
        if "__prefix__" not in name:
            data.setdefault(name, []).append(value)
    data["_save"] = ["Save"]
    return data
