"""A network device for netcfgbu to back up, over real SSH (asyncssh, in
netcfgbu's own Python 3.8 environment): password "devpass"; `show
running-config` prints a config. The user "broken" logs in but the device
refuses the command channel, so netcfgbu gets an exception back as the backup's
result and calls `backup_success` with it.

usage: python fake_device.py PORT   (prints "ready" once listening)
"""

import asyncio
import sys

import asyncssh

CONFIG = "hostname {host}\ninterface Ethernet1\n   description uplink\n!\nend\n"


class Device(asyncssh.SSHServer):
    def begin_auth(self, username):
        self.user = username
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        return password == "devpass"

    def session_requested(self):
        return False if self.user == "broken" else run


def run(stdin, stdout, stderr):
    # asyncssh's stream session: the command is on the channel.
    command = (stdout.channel.get_command() or "").strip()
    if command == "show running-config":
        stdout.write("show running-config\n" + CONFIG.format(host="switch1"))
        stdout.channel.exit(0)
    else:
        stderr.write("% Invalid input\n")
        stdout.channel.exit(1)


async def main(port):
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    await asyncssh.create_server(Device, "127.0.0.1", port, server_host_keys=[key])
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.get_event_loop().run_until_complete(main(int(sys.argv[1])))
