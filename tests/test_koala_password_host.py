"""The stored Koala password goes only to the host it was saved for: a new address needs it typed again."""
import pytest

from tests.conftest import ADMIN_KEY, CLOUD_URL
from tests.fakes import FakeKoala

HOST_CHANGED = "考拉主机地址已更改，请重新输入考拉密码"


@pytest.fixture
def thief(io_loop, fakes):
    """Another host, which would accept the stored credentials if it were sent them."""
    other = FakeKoala(username=fakes.koala.username, password=fakes.koala.password)
    other.start()
    yield other
    other.stop()


def host(fake) -> str:
    return fake.url.removeprefix("http://").rstrip("/")


def servers(fake, password="******") -> dict:
    return {"koala_ip": host(fake), "koala_username": fake.username, "koala_password": password,
            "cloud_url": CLOUD_URL}


@pytest.mark.gen_test
async def test_the_api_keeps_a_masked_password_only_for_the_same_host(anonymous, configured, fakes, thief):
    moved = await anonymous.fetch("/v1/config/servers", "PUT", json=servers(thief), key=ADMIN_KEY)
    assert moved.status == 400
    assert moved.json() == {"code": 400, "err_msg": f"参数 koala_password {HOST_CHANGED}"}
    assert (await anonymous.fetch("/v1/config/servers", key=ADMIN_KEY)).json()["data"]["koala_ip"] == host(fakes.koala)
    await configured.koala.check()  # Koala is used as usual: at the address the password was saved for
    assert (thief.logins, fakes.koala.logins) == (0, 1)
    same = await anonymous.fetch("/v1/config/servers", "PUT", json=servers(fakes.koala), key=ADMIN_KEY)
    assert same.json()["code"] == 0
    typed = await anonymous.fetch("/v1/config/servers", "PUT", json=servers(thief, thief.password), key=ADMIN_KEY)
    assert typed.json()["code"] == 0  # whoever types the password may send it anywhere
    await configured.koala.check()
    assert thief.logins == 1


@pytest.mark.gen_test
async def test_the_connection_test_never_sends_the_stored_password_to_another_host(admin_login, configured,
                                                                                      fakes, thief):
    browser = await admin_login()
    for path in ("/admin/settings/koala-test", "/admin/settings/servers"):
        resp = await browser.fetch(path, "POST", form={**servers(thief, ""), "_xsrf": browser.cookie("_xsrf")})
        assert resp.status == 400
        assert HOST_CHANGED in resp.text
    assert thief.logins == 0
    resp = await browser.fetch("/admin/settings/koala-test", "POST",
                               form={**servers(fakes.koala, ""), "_xsrf": browser.cookie("_xsrf")})
    assert "连接成功" in resp.text and fakes.koala.logins == 1
