"""policyagent: the Windows 2000 IPsec policy model, the matcher, and the agent that joins IKE and ESP."""
