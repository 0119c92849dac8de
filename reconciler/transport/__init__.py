"""gRPC plumbing shared by the agent and control servers and their clients."""
