"""An OPC UA server ironlake did not write (Python asyncua), for tests/opcua.rs.

    python server.py PORT PKI_DIR [--shift N]

Security: Basic256Sha256 and Aes128_Sha256_RsaOaep with SignAndEncrypt only
(no None endpoint); identities: user `operator` / `secret`, or the X.509 user
certificate PKI_DIR/user-cert.der when it exists (anonymous refused).
Its certificate is made in PKI_DIR on first start (kept across restarts).

Address space (namespace `urn:acme:plc`, registered after N dummy namespaces
so its index differs between runs):

    Objects/Machines/Mill1                         (OPC 40001 shape)
      Identification/ Manufacturer, Model, SerialNumber
      MachineryBuildingBlocks/MachineryItemState/CurrentState (+ Number)
      Monitoring/Spindle/ Speed (Double, EURange 0..24000, EngineeringUnits rpm), IsRotating (Boolean)
      Monitoring/Spindle/Temperature (Double: every 5th value Uncertain, every 7th Bad)
      Production/GoodParts (UInt32, counts up)
      Monitoring/Coolant/Level (Double)            added once PKI_DIR/add-coolant exists
                                                   (a firmware update after commissioning)

Prints `ready` on stdout once listening; values change every 100 ms.
"""
import asyncio
import datetime
import logging
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID


class Users(UserManager):
    def __init__(self, pki):
        self.pki = pki

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "operator" and password == "secret":
            return User(role=UserRole.User)
        known = self.pki / "user-cert.der"
        if certificate is not None and known.exists():
            from cryptography.hazmat.primitives.serialization import Encoding
            der = certificate.public_bytes(Encoding.DER) if hasattr(certificate, "public_bytes") else bytes(certificate)
            if der == known.read_bytes():
                return User(role=UserRole.User)
        return None


async def main():
    port = int(sys.argv[1])
    pki = Path(sys.argv[2])
    shift = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--shift" else 0
    pki.mkdir(parents=True, exist_ok=True)
    cert, key = pki / "server-cert.der", pki / "server-key.pem"
    uri = "urn:acme:asyncua-test-server"
    await setup_self_signed_certificate(
        key, cert, uri, "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        {"countryName": "DE", "organizationName": "ACME", "commonName": "acme test server"},
    )
    server = Server(user_manager=Users(pki))
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/acme/")
    server.set_server_name("ACME test PLC")
    await server.set_application_uri(uri)
    server.set_security_policy([
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ])
    server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    for i in range(shift):
        await server.register_namespace(f"urn:acme:dummy:{i}")
    ns = await server.register_namespace("urn:acme:plc")

    objects = server.nodes.objects
    machines = await objects.add_folder(ns, "Machines")
    mill = await machines.add_object(ns, "Mill1")
    ident = await mill.add_object(ns, "Identification")
    await ident.add_property(ns, "Manufacturer", ua.LocalizedText("ACME Machine Tools"))
    await ident.add_property(ns, "Model", ua.LocalizedText("Mill 5X"))
    await ident.add_property(ns, "SerialNumber", "SN-4711")
    bb = await mill.add_object(ns, "MachineryBuildingBlocks")
    item = await bb.add_object(ns, "MachineryItemState")
    cur = await item.add_variable(ns, "CurrentState", ua.LocalizedText("Executing"))
    number = await cur.add_property(ns, "Number", ua.Variant(2, ua.VariantType.UInt32))
    mon = await mill.add_object(ns, "Monitoring")
    spindle = await mon.add_object(ns, "Spindle")
    speed = await spindle.add_variable(ns, "Speed", 0.0)
    await speed.add_property(0, "EURange", ua.Range(Low=0.0, High=24000.0))
    await speed.add_property(0, "EngineeringUnits", ua.EUInformation(DisplayName=ua.LocalizedText("rpm")))
    rotating = await spindle.add_variable(ns, "IsRotating", True)
    temp = await spindle.add_variable(ns, "Temperature", 20.0)
    prod = await mill.add_object(ns, "Production")
    good = await prod.add_variable(ns, "GoodParts", ua.Variant(0, ua.VariantType.UInt32))

    async with server:
        print("ready", flush=True)
        i = 0
        coolant = None
        while True:
            i += 1
            if coolant is None and (pki / "add-coolant").exists():
                c = await mon.add_object(ns, "Coolant")
                coolant = await c.add_variable(ns, "Level", 80.0)
            if coolant is not None:
                await coolant.write_value(ua.DataValue(ua.Variant(80.0 - (i % 10), ua.VariantType.Double)))
            await speed.write_value(ua.DataValue(ua.Variant(12000.0 + (i % 10) * 10.0, ua.VariantType.Double)))
            await rotating.write_value(ua.DataValue(ua.Variant(i % 20 != 0, ua.VariantType.Boolean)))
            if i % 7 == 0:
                status = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
            elif i % 5 == 0:
                status = ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)
            else:
                status = ua.StatusCode(ua.StatusCodes.Good)
            await temp.write_value(ua.DataValue(ua.Variant(40.0 + (i % 3), ua.VariantType.Double), StatusCode=status, SourceTimestamp=datetime.datetime.now(datetime.timezone.utc)))
            await good.write_value(ua.DataValue(ua.Variant(i // 10, ua.VariantType.UInt32)))
            if i % 50 == 0:
                await number.write_value(ua.DataValue(ua.Variant(3 if (i // 50) % 2 else 2, ua.VariantType.UInt32)))
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
