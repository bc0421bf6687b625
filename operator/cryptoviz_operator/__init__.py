"""The CryptoViz operator: TrackedCrypto resources → the scraper's ConfigMap (and CronJob schedule).

Run with `kopf run --standalone -m cryptoviz_operator`; importing the package registers the handlers.
"""

from cryptoviz_operator import handlers as handlers
