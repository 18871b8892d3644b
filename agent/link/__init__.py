"""The agent's link to the cloud: spool, reconnect policy, MQTT adapter, config and commands.

Importing this package loads nothing heavy; `agent.link.link` brings in aiomqtt.
"""
