#!/usr/bin/python3
"""A relay for the outbox tests (issue 6): aiosmtpd (Debian python3-aiosmtpd)
that requires STARTTLS (RFC 3207) and then AUTH PLAIN/LOGIN (RFC 4954) with
one user, and prints each message it takes, with the login, to stdout.

    relay_tls_auth.py HOST PORT CERT KEY USER PASSWORD
"""
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Print:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else session.auth_data
        print("---------- MESSAGE FOLLOWS ----------", flush=True)
        print(f"X-Test-Login: {login}", flush=True)
        print(f"X-Test-Tls: {session.ssl is not None}", flush=True)
        print(envelope.content.decode("utf-8", "replace"), flush=True)
        print("------------ END MESSAGE ------------", flush=True)
        return "250 OK"


def main() -> None:
    host, port, cert, key, user, password = sys.argv[1:7]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    controller = Controller(
        Print(),
        hostname=host,
        port=int(port),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("Server is listening", file=sys.stderr, flush=True)
    try:
        signal.pause()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
