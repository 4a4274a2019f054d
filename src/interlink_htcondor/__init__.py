"""interLink plugin that runs Kubernetes pods as HTCondor jobs in Apptainer."""

__version__ = "0.1.0"

ANNOTATION_PREFIX = "htcondor.interlink.eu/"
