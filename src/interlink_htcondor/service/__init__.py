"""The plugin service: interLink's plugin API over HTTP, and its I/O.

``app.create_app`` builds the ASGI app. One handler module per interLink endpoint
(``create``, ``status``, ``logs``, ``delete``) plus ``health``; the schedd ``gateway`` is
the only module that talks to HTCondor, the ``sandbox_store`` the only one that writes pod
files. Imports point down, to ``interlink_htcondor.core`` and ``interlink_htcondor.settings``.
"""
