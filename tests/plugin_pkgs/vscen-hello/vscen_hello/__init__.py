"""A third-party vscen plugin, as small as one can be."""

from vscen import Feature, Scenario, hookimpl

GREETING = "hello from vscen-hello"


def _greet(domain, ctx):
    domain.ensure("description").text(GREETING)


@hookimpl
def vscen_register_features(register):
    register(Feature(name="hello", summary="Say hello in the domain description", apply=_greet))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="hello-world", summary="A guest that says hello", features=("hello",)))
