"""Warm start: the first trials of a search placed by the sensitivity curves of the named-weights analysis.

A space whose prune step searches per-layer targets (`layer_targets:
{conv2: "${conv2}"}`) or a global `target_sparsity: "${sparsity}"` need not
begin blind: one sensitivity analysis of the model (each weight pruned
one-shot to each sparsity, the others intact) says which layers tolerate
pruning. For a few global sparsities spread over what the ranges allow,
`importance.allocate` spreads the zeros where they cost least, and each
parameter gets the size-weighted mean of its weights' shares, inside its
range. Those values are enqueued as the study's first trials; every other
parameter is left to the sampler.
"""

import re

from keras_compress.search.space import _PLACEHOLDER, SearchSpace

WARM_TRIALS = 3
_DEFAULT_TARGET = 0.5  # PruneConfig's target_sparsity default
SAMPLES = 2000


def _name(value):
    match = _PLACEHOLDER.match(value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def _prune_steps(space: SearchSpace):
    """`(settings, when-parameter)` for each prune step of the template."""
    for item in space.template.get("steps", []):
        if isinstance(item, dict) and isinstance(item.get("prune"), dict):
            yield item["prune"], _name(item.get("when"))


def _layer_rule(settings, parameters):
    """`[(pattern, parameter or None, fixed value or None)]` in `layer_targets` order, then the global target."""
    rules = []
    for pattern, value in (settings.get("layer_targets") or {}).items() if isinstance(
            settings.get("layer_targets"), dict) else ():
        name = _name(value)
        rules.append((pattern, name if name in parameters else None, None if name else float(value)))
    name = _name(settings.get("target_sparsity"))
    rules.append((None, name if name in parameters else None,
                  None if name else float(settings.get("target_sparsity", _DEFAULT_TARGET))))
    return rules


def plan(space: SearchSpace):
    """What a warm start can set, from the first prune step that searches sparsities: `{"rules", "layers",
    "flag"}` (its per-weight rules, its layer filter, its `when:` parameter), or None."""
    parameters = {p.name: p for p in space.parameters}
    for settings, flag in _prune_steps(space):
        if _name(settings.get("layers")) is not None:
            continue  # which layers it prunes is searched: no one plan of targets
        rules = _layer_rule(settings, parameters)
        searched = [r for r in rules if r[1] is not None]
        if searched:
            return {"rules": rules, "layers": settings.get("layers"), "flag": flag}
    return None


def _matching(rules, ref):
    """The rule of a weight: the first pattern that matches its layer name or path (PruneConfig's rule)."""
    for rule in rules[:-1]:
        if re.search(rule[0], ref.layer.name) or re.search(rule[0], ref.path):
            return rule
    return rules[-1]


def _range(parameter):
    if parameter.kind == "categorical":
        numbers = [float(c) for c in parameter.choices]
        return min(numbers), min(max(numbers), 0.995)
    return float(parameter.low), min(float(parameter.high), 0.995)


def _value(parameter, share):
    if parameter.kind == "categorical":
        return min(parameter.choices, key=lambda c: abs(float(c) - share))
    share = min(max(share, float(parameter.low)), float(parameter.high))
    if parameter.kind == "int":
        return int(round(share))
    if parameter.step:
        steps = round((share - parameter.low) / parameter.step)
        return min(parameter.low + steps * parameter.step, parameter.high)
    return float(share)


def _scorer(metric):
    """`fn(model, x, y)`: the search's metric on held-out arrays, higher is better (what `allocate` assumes)."""
    from keras_compress import metrics
    from keras_compress.data.split import Split

    sign = 1.0 if metric.higher_is_better else -1.0

    def score(model, x, y):
        return sign * metric.score(metrics.keras_predictor(model), Split.from_arrays(x, y, name="held-out"),
                                   output_names=metrics.output_names(model))

    return score


def sensitivity_trials(model, data, space, count=WARM_TRIALS, samples=SAMPLES, metric=None):
    """Parameter values for the first `count` trials, from one sensitivity analysis of `model`.

    Args:
        model: the trained Keras model (restored exactly after the analysis).
        data: `(x, y)` held-out samples the analysis evaluates on.
        space: the `SearchSpace`.
        count: how many warm trials (global sparsities evenly inside what the ranges allow).
        samples: at most this many samples are evaluated per point of each curve.
        metric: the search's `keras_compress.metrics.Metric` (default: accuracy).

    Returns:
        A list of `{parameter: value}` (only the parameters the curves decide), empty when the space searches
        no pruning target.
    """
    from keras_compress.core import walk
    from keras_compress.importance.sensitivity import allocate, sensitivity

    found = plan(space)
    if found is None or count < 1:
        return []
    parameters = {p.name: p for p in space.parameters}
    rules = found["rules"]
    result = sensitivity(model, data, layers=found["layers"], max_samples=samples,
                         score=_scorer(metric) if metric is not None else None)
    refs, _ = walk.find_weights(model, found["layers"])
    owner, bounds = {}, {}
    for ref in refs:
        name = walk.weight_name(model, ref.variable)
        if name not in result["curves"]:
            continue
        _, parameter, fixed = _matching(rules, ref)
        owner[name] = parameter
        bounds[name] = (fixed, fixed) if parameter is None else _range(parameters[parameter])
    sizes = {n: result["sizes"][n] for n in owner}
    total = sum(sizes.values())
    least = sum(bounds[n][0] * sizes[n] for n in owner) / total
    most = sum(bounds[n][1] * sizes[n] for n in owner) / total
    trials = []
    for i in range(count):
        target = least + (most - least) * (i + 1) / (count + 1)
        shares = allocate({n: result["curves"][n] for n in owner}, sizes, result["baseline"], target,
                          bounds=bounds)
        values = {}
        for parameter in sorted({p for p in owner.values() if p is not None}):
            mine = [n for n in owner if owner[n] == parameter]
            share = sum(shares[n] * sizes[n] for n in mine) / sum(sizes[n] for n in mine)
            values[parameter] = _value(parameters[parameter], share)
        if found["flag"] in parameters:
            values[found["flag"]] = True
        trials.append(values)
    return trials
