"""The pipeline's commands, driven like an admin would from a terminal."""

from __future__ import annotations

import re

from hub.cli import cli
from hub.extensions import db
from hub.models import Connection
from hub.suppressions import suppress
from surveyhub_kustomer.sandbox.org import UNSUBSCRIBED
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture)


def test_connect_create_activate_preview_scan_and_inspect(app, runner, sandbox, redis_client):  # noqa: F811
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    with app.app_context():
        suppress(UNSUBSCRIBED, "unsubscribed")
    connected = runner.invoke(
        cli,
        ["connect", "kustomer", "--name", "Sandbox", "--setting", f"url={sandbox.url}"],
        input=f"{sandbox.seeded.api_key}\n",
    )
    assert connected.exit_code == 0, connected.output
    assert "with the key 'SurveyHub sandbox key'" in connected.output
    assert sandbox.seeded.api_key not in connected.output  # the prompt hides it
    connection_id = re.search(r"Saved connection (\d+)", connected.output).group(1)

    created = runner.invoke(
        cli,
        [
            "survey",
            "create",
            "--connection",
            connection_id,
            "--metric",
            "nps",
            "--set",
            'excluded_tags=["5f0000000000000000000e01"]',
            "--set",
            "company_name=Acme",
        ],
    )
    assert created.exit_code == 0, created.output
    survey_id = re.search(r"Created survey (\d+)", created.output).group(1)

    refused = runner.invoke(cli, ["scan", survey_id])
    assert refused.exit_code == 1 and "not active" in refused.output
    preview = runner.invoke(cli, ["scan", survey_id, "--dry-run", "--lookback-days", "30"])
    assert preview.exit_code == 0, preview.output
    decisions = [line for line in preview.output.splitlines() if line.startswith("0000")]
    assert len(decisions) == len(sandbox.seeded.eligible) + len(sandbox.seeded.skipped)
    assert sum(line.endswith("  send") for line in decisions) == len(sandbox.seeded.eligible)
    assert runner.invoke(cli, ["activate", survey_id, "--lookback-days", "30"]).exit_code == 0
    assert redis_client.llen("rq:queue:scans") == 1  # the first scan, right away

    scanned = runner.invoke(cli, ["scan", survey_id])
    assert scanned.exit_code == 0, scanned.output
    assert f"{len(sandbox.seeded.eligible)} pending" in scanned.output
    log = runner.invoke(cli, ["deliveries", survey_id, "--state", "skipped"])
    assert "(wrong channel)" in log.output and "(excluded tag)" in log.output

    assert runner.invoke(cli, ["write-backs"]).exit_code == 0
    missing = runner.invoke(cli, ["write-backs", "--retry", "999"])
    assert missing.exit_code == 1 and "not failed or pending" in missing.output


def test_connect_refuses_a_wrong_key_with_kustomers_reason(app, runner, sandbox):  # noqa: F811
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    result = runner.invoke(
        cli,
        [
            "connect",
            "kustomer",
            "--name",
            "S",
            "--setting",
            f"url={sandbox.url}",
        ],
        input="wrong\n",
    )
    assert result.exit_code == 1
    assert "Kustomer refused the API key" in result.output


def test_connect_refuses_an_unknown_host(app, runner):
    result = runner.invoke(
        cli,
        [
            "connect",
            "kustomer",
            "--name",
            "S",
            "--setting",
            "url=https://evil.example",
        ],
        input="k\n",
    )
    assert result.exit_code == 1
    assert "is not a Kustomer address" in result.output


def test_connect_never_takes_a_secret_from_the_command_line(app, runner):
    result = runner.invoke(
        cli,
        ["connect", "kustomer", "--name", "S", "--setting", "url=acme", "--setting", "api_key=k"],
    )
    assert result.exit_code == 1
    assert "Do not put api_key on the command line" in result.output


def test_connect_without_a_url_says_so_before_asking_for_the_key(app, runner):
    result = runner.invoke(cli, ["connect", "kustomer", "--name", "S"], input="k\n")
    assert result.exit_code == 1
    assert "API key" not in result.output  # not prompted
    assert "Kustomer URL (--setting url=…): Missing data for required field." in result.output
    assert "{" not in result.output
    typo = runner.invoke(cli, ["connect", "kustomer", "--name", "S", "--setting", "uri=acme"])
    assert "kustomer has no setting 'uri'; its settings are: url, api_key." in typo.output


def test_survey_create_refuses_unknown_settings_and_survey_list_shows_them(app, runner):
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={"url": "acme"})
        db.session.add(connection)
        db.session.commit()
    typo = runner.invoke(
        cli, ["survey", "create", "--connection", "1", "--metric", "nps", "--set", "delay=24"]
    )
    assert typo.exit_code == 1
    assert "There is no setting 'delay'. The settings are: delay_hours, channels" in typo.output
    bad = runner.invoke(
        cli, ["survey", "create", "--connection", "1", "--metric", "nps", "--set", "delay_hours=x"]
    )
    assert bad.exit_code == 1 and "delay_hours" in bad.output and "{" not in bad.output
    made = runner.invoke(
        cli,
        ["survey", "create", "--connection", "1", "--metric", "csat", "--name", "Support CSAT"],
    )
    assert made.exit_code == 0, made.output
    listing = runner.invoke(cli, ["survey", "list"])
    assert listing.exit_code == 0
    assert "1  Support CSAT  csat  kustomer:Acme  inactive  last scan never" in listing.output


def test_connect_reads_the_key_from_a_file(app, runner, sandbox, tmp_path):  # noqa: F811
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    key_file = tmp_path / "kustomer.key"
    key_file.write_text(sandbox.seeded.api_key + "\n")
    result = runner.invoke(
        cli,
        [
            "connect",
            "kustomer",
            "--name",
            "S",
            "--setting",
            f"url={sandbox.url}",
            "--secret-file",
            f"api_key={key_file}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Saved connection" in result.output
