"""`cockpit-exporter grafana sync`: the command line around exporter/grafana/sync.py."""

import argparse
import asyncio
import json
import sys

from exporter.audit import record_once
from exporter.config import ConfigError, load_config
from exporter.exitcodes import EXIT_FAILED, fail
from exporter.grafana.sync import SyncError, authorization, record, sync, wanted_orgs
from exporter.sources.base import safe_url


def run(options: argparse.Namespace) -> int:
    """Plan, print and (unless --dry-run) apply and provision; --record writes the org ids."""
    try:
        config = load_config(options.config, secrets=False)  # Grafana needs none of them
        auth = authorization(options.basic_auth_file, options.token_file)
        steps, done = asyncio.run(
            sync(config, options.url, auth, options.dry_run, options.provision, options.wait)
        )
    except ConfigError as exc:
        return fail(str(exc))
    except SyncError as exc:
        return fail(f"grafana sync: {exc}", EXIT_FAILED)
    except OSError as exc:
        return fail(f"grafana sync: cannot write provisioning: {exc}", EXIT_FAILED)
    out = sys.stdout
    out.writelines(f"plan: {step}\n" for step in steps)
    if options.provision is not None:
        out.write(f"plan: write provisioning under {options.provision}, reload it\n")
    if options.dry_run:
        out.write("dry run: nothing changed\n")
        return 0
    out.writelines(f"{line}\n" for line in done or ["nothing to change"])
    if options.audit_file is not None and not record_once(
        options.audit_file, "grafana sync", "cli", grafana=safe_url(options.url), actions=done
    ):
        fail("grafana sync: done, but not recorded in the audit trail", EXIT_FAILED)
    if options.record is not None:
        ids = record(wanted_orgs(config))
        options.record.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    return 0
