"""Why a control is greyed out (the page's controls, the sweep's space): the technique table's refusals, asked with
a value that turns the field on."""
from .steps import FIELDS, refusal


def field_reason(name: str, bundle, values: dict) -> str | None:
    """Why the control of field `name` is greyed out for this model and these values, or None. A field already
    off its default stays usable, so a value that came from a link can always be undone."""
    f = FIELDS[name]
    ns = type("R", (), dict(values))  # the values as attributes (they may not form a valid Recipe)
    if f.off is not None and (why := f.off(ns)):
        return why
    if values.get(name, f.default) != f.default:
        return None
    # a count probes with the model's own (keeping all is always a valid count: 1 is not, under grouped-query
    # attention), so a control is greyed out only by what refuses the technique itself
    on = bundle.info[f.most] if f.most and bundle is not None and bundle.info.get(f.most) else f.probe()
    probe = type("R", (), {**values, name: on})
    return refusal(bundle, probe) if refusal(bundle, type("R", (), {**values, name: f.default})) is None else None
