"""policyagent: the Windows 2000 IPsec policy model, the matcher, and the agent that joins IKE and ESP."""

__all__ = ["AgentConfig", "AgentService", "PolicyAgent", "start_agent"]


def __getattr__(name: str):
    """``policyagent.PolicyAgent`` (sans-I/O core) and its asyncio service, imported on first
    use so that the policy commands do not load the IKE and ESP stacks."""
    if name in ("PolicyAgent", "AgentConfig"):
        from policyagent import agent

        return getattr(agent, name)
    if name in ("AgentService", "start_agent"):
        from policyagent import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'policyagent' has no attribute {name!r}")
