"""`surveyhub kustomer-sandbox`: serve a fake Kustomer org on this machine."""

from __future__ import annotations

import click


def add_command(cli: click.Group) -> None:
    """Add the `kustomer-sandbox` command to the `surveyhub` group."""

    @cli.command("kustomer-sandbox")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8900, show_default=True, type=int)
    @click.option("--eligible", default=6, show_default=True, help="Conversations to survey.")
    @click.option("--api-key", default="sandbox-api-key", show_default=True)
    @click.option("--rate-limit", default=1000, show_default=True, help="Requests per minute.")
    def kustomer_sandbox(host: str, port: int, eligible: int, api_key: str, rate_limit: int):
        """Serve a local fake Kustomer org (try SurveyHub without a Kustomer account)."""
        from werkzeug.serving import run_simple

        from surveyhub_kustomer.sandbox.app import create_sandbox
        from surveyhub_kustomer.sandbox.org import seed

        seeded = seed(eligible=eligible, api_key=api_key)
        url = f"http://{host}:{port}"
        click.echo(
            f"Kustomer sandbox for org '{seeded.org.name}' at {url}\n"
            f"  {len(seeded.eligible)} conversations to survey, {len(seeded.skipped)} to skip\n"
            f"  API key: {api_key}\n"
            f"Start the hub with HUB_ALLOWED_HELPDESK_URLS={url} and connect Kustomer with\n"
            f"the URL {url} and that key. State and fault injection: {url}/__sandbox/state"
        )
        run_simple(host, port, create_sandbox(seeded.org, rate_limit=rate_limit), threaded=True)
