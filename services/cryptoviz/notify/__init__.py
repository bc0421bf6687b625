"""`cryptoviz notify`: fired alerts from JetStream to people, through Apprise, each exactly once."""
