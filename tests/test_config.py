"""Configuration: first found wins, per setting; unsafe keys refused."""

from __future__ import annotations

import pytest

from barclamp_sdk.chef import ChefClient, ChefConfig
from barclamp_sdk.errors import ConfigurationError


@pytest.fixture
def chef_dir(tmp_path):
    directory = tmp_path / ".chef"
    directory.mkdir()
    for name in ("knife.pem", "profile.pem", "env.pem"):
        (directory / name).write_text("-----BEGIN RSA PRIVATE KEY-----\n")
        (directory / name).chmod(0o600)
    return directory


def write_knife(chef_dir, url="https://knife.example.com/organizations/acme"):
    (chef_dir / "knife.rb").write_text(
        "# a typical knife.rb\n"
        "current_dir = File.dirname(__FILE__)\n"
        "log_level :info\n"
        'node_name "knife-user"   # who we are\n'
        'client_key "#{current_dir}/knife.pem"\n'
        f"chef_server_url '{url}'\n"
        "encrypted_data_bag_secret File.join(current_dir, 'secret')\n"
        "knife[:editor] = 'vim'\n"
    )


def write_credentials(chef_dir):
    (chef_dir / "credentials").write_text(
        "[default]\n"
        'client_name = "profile-user"\n'
        'client_key = "profile.pem"\n'
        'chef_server_url = "https://profile.example.com"\n'
        "[prod]\n"
        'client_name = "prod-user"\n'
        'client_key = "profile.pem"\n'
        'chef_server_url = "https://prod.example.com/organizations/prod"\n'
    )


def test_knife_rb_common_keys(chef_dir):
    write_knife(chef_dir)
    config = ChefConfig.load(config_dir=chef_dir, environ={})
    assert config.server_url == "https://knife.example.com/organizations/acme"
    assert config.client_name == "knife-user"
    assert config.client_key_path == str(chef_dir / "knife.pem")
    assert config.encrypted_data_bag_secret == str(chef_dir / "secret")
    assert config.source_of("client_name") == str(chef_dir / "knife.rb")


def test_credentials_profile_beats_knife(chef_dir):
    write_knife(chef_dir)
    write_credentials(chef_dir)
    config = ChefConfig.load(config_dir=chef_dir, environ={})
    assert config.client_name == "profile-user"
    assert config.client_key_path == str(chef_dir / "profile.pem")
    # Settings the profile lacks still come from knife.rb.
    assert config.encrypted_data_bag_secret == str(chef_dir / "secret")


def test_profile_selection_env_context_and_argument(chef_dir):
    write_credentials(chef_dir)
    assert ChefConfig.load(config_dir=chef_dir, environ={"CHEF_PROFILE": "prod"}).client_name == "prod-user"
    (chef_dir / "context").write_text("prod\n")
    assert ChefConfig.load(config_dir=chef_dir, environ={}).client_name == "prod-user"
    assert ChefConfig.load(config_dir=chef_dir, environ={}, profile="default").client_name == "profile-user"
    with pytest.raises(ConfigurationError, match="profile 'nope' not found.*default, prod"):
        ChefConfig.load(config_dir=chef_dir, environ={}, profile="nope")


def test_environment_beats_profile_and_arguments_beat_everything(chef_dir):
    write_credentials(chef_dir)
    env = {"CHEF_SERVER_URL": "https://env.example.com", "CHEF_CLIENT_NAME": "env-user",
           "CHEF_CLIENT_KEY": str(chef_dir / "env.pem")}
    config = ChefConfig.load(config_dir=chef_dir, environ=env)
    assert (config.server_url, config.client_name) == ("https://env.example.com", "env-user")
    assert config.source_of("server_url") == "environment"
    config = ChefConfig.load(config_dir=chef_dir, environ=env, client_name="arg-user")
    assert config.client_name == "arg-user" and config.server_url == "https://env.example.com"


def test_inline_pem_in_a_profile(chef_dir):
    (chef_dir / "credentials").write_text(
        '[default]\nclient_name = "x"\nchef_server_url = "http://h"\n'
        'client_key = """\n-----BEGIN RSA PRIVATE KEY-----\nabc\n"""\n'
    )
    (chef_dir / "credentials").chmod(0o600)  # an inline key needs a private file (see test_inputs_hostile)
    config = ChefConfig.load(config_dir=chef_dir, environ={})
    assert config.client_key_path is None
    assert config.read_client_key().lstrip().startswith("-----BEGIN")


def test_nothing_configured_says_what_to_set(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        ChefConfig.load(config_dir=tmp_path, environ={})
    message = str(info.value)
    assert "CHEF_SERVER_URL" in message and "credentials" in message and "\n" not in message


def test_bad_url_is_refused(chef_dir):
    with pytest.raises(ConfigurationError, match="must look like https://"):
        ChefConfig.load(config_dir=chef_dir, environ={}, server_url="chef.example.com",
                        client_name="a", client_key=str(chef_dir / "env.pem"))


def test_tls_settings(chef_dir):
    base = {"CHEF_SERVER_URL": "https://h", "CHEF_CLIENT_NAME": "a", "CHEF_CLIENT_KEY": str(chef_dir / "env.pem")}
    assert ChefConfig.load(config_dir=chef_dir, environ=base).verify is True
    assert ChefConfig.load(config_dir=chef_dir, environ={**base, "CHEF_SSL_CA_FILE": "/etc/ca.pem"}).verify == "/etc/ca.pem"
    assert ChefConfig.load(config_dir=chef_dir, environ={**base, "CHEF_SSL_VERIFY": "false"}).verify is False
    (chef_dir / "knife.rb").write_text("ssl_verify_mode :verify_none\n")
    assert ChefConfig.load(config_dir=chef_dir, environ=base).verify is False


def test_unreadable_knife_value_names_the_line(chef_dir):
    (chef_dir / "knife.rb").write_text('node_name "a"\nclient_key some_method_call(1)\n')
    with pytest.raises(ConfigurationError, match=r"knife.rb:2: cannot read the value of client_key"):
        ChefConfig.load(config_dir=chef_dir, environ={})


def test_key_readable_by_others_is_refused(chef_server, tmp_path):
    loose = tmp_path / "loose.pem"
    loose.write_text(chef_server.server.key_path.read_text())
    loose.chmod(0o644)
    with pytest.raises(ConfigurationError, match=r"can be read by other users \(mode 0644\); run: chmod 600"):
        ChefClient(chef_server.config(client_key_path=str(loose)))
    loose.chmod(0o600)
    assert ChefClient(chef_server.config(client_key_path=str(loose))).get("/environments/_default")["name"] == "_default"


def test_missing_key_file(chef_server, tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        ChefClient(chef_server.config(client_key_path=str(tmp_path / "none.pem")))
