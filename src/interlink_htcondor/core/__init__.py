"""The pure core: pod -> job and job ClassAd -> pod status, with no I/O.

Wire models (``models``), the ClassAd attributes a job carries (``classad_attrs``), the
job spec the wrapper reads (``jobspec``), what a translation hands the gateway (``plan``),
the status mapping (``pod_status``), the wrapper's status file (``status_file``), CRI log
reading (``container_logs``) and the translation itself (``translate``). Imports point only
down, to ``interlink_htcondor.settings``.
"""
