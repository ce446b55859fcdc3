"""Customer e-mail texts from the package's `templates/<name>.txt`: the first line is `Subject: …`,
the rest the body; `$name`-style placeholders are filled (an unknown one is left as written)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from string import Template

from services.notification.app.ports import Rendered


@cache
def _template(name: str) -> Template:
    return Template(resources.files("services.notification").joinpath(f"templates/{name}.txt").read_text())


class PackageTemplates:
    """Implements ``Templates``; each file is read once per process."""

    def render(self, name: str, values: Mapping[str, str]) -> Rendered:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"no template may be called {name!r}")
        subject_line, _, body = _template(name).safe_substitute(values).partition("\n")
        if not subject_line.startswith("Subject:"):
            raise ValueError(f"template {name}.txt does not start with 'Subject:'")
        return Rendered(subject=subject_line.removeprefix("Subject:").strip(), body=body.strip() + "\n")
