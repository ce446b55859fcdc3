"""A secured local Kafka: the same broker from the Maven jars, as a hardened cluster would run it.

- Clients connect with **SASL_SSL** (SCRAM-SHA-512 or -256) on ``127.0.0.1:19094``, or with **SSL and a
  client certificate** on ``127.0.0.1:19096`` (the principal is then the certificate's subject).
- The controller listener (``19095``) is TLS with client authentication required: a PLAINTEXT
  controller would need ``User:ANONYMOUS`` as a super user, i.e. any local process could change ACLs.
- ``StandardAuthorizer``, deny by default (``allow.everyone.if.no.acl.found=false``); the super users
  are ``admin`` (topic creation and ACLs only), ``broker`` (inter-broker login) and the broker's own
  certificate. Every other principal gets exactly the ACLs of ``libs/contracts/acls.py``.
- One SCRAM user per principal, created when the storage is formatted (``--add-scram``) with a
  password generated at first start and kept in a 0600 file; the format reads them from a 0600
  argument file, so no password ever appears on a command line.

The CA and certificates are made with the ``cryptography`` package and handed to Kafka as PEM
(``ssl.keystore.type=PEM``): it takes milliseconds, where keytool starts a JVM per step (about 10 s
for the set), and the same PEM files serve Python's ``ssl`` module directly. They are made once
and cached under the cache dir with the credentials; losing either re-creates both and the data.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.platform.kafka import KafkaAccess, KafkaSecurity, SaslMechanism
from libs.platform.stack import KafkaBroker, cache_dir

SECURE_KAFKA_PORT = 19094
SECURE_CONTROLLER_PORT = 19095
SECURE_SSL_PORT = 19096
SCRAM_MECHANISM: SaslMechanism = "SCRAM-SHA-512"
ADMIN = "admin"
BROKER_USER = "broker"
BROKER_CERT_PRINCIPAL = "User:CN=localhost"


def local_principals() -> tuple[str, ...]:
    """Every SCRAM user of the local broker: Baton's principals plus the admin and the broker."""
    from libs.contracts.acls import PRINCIPALS

    return (ADMIN, BROKER_USER, *PRINCIPALS)


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, created with that mode (never briefly open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


@dataclass
class SecureKafkaBroker(KafkaBroker):
    port: int = SECURE_KAFKA_PORT
    controller_port: int = SECURE_CONTROLLER_PORT
    ssl_port: int = SECURE_SSL_PORT
    home: Path = field(default_factory=lambda: cache_dir() / "kafka-secure")

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA clients trust (``KAFKA_SSL_CAFILE``)."""
        return self.tls_dir / "ca.pem"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    @property
    def ssl_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def password(self, principal: str) -> str:
        passwords: dict[str, str] = json.loads(self.credentials_file.read_text())
        return passwords[principal]

    def security(self, principal: str, mechanism: SaslMechanism = SCRAM_MECHANISM) -> KafkaSecurity:
        """How ``principal`` logs in to this broker (SASL_SSL, SCRAM, trusting the local CA)."""
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=principal,
            sasl_password=self.password(principal),
            ssl_cafile=str(self.ca_file),
        )

    def access(self, principal: str) -> KafkaAccess:
        return KafkaAccess(self.bootstrap_servers, self.security(principal))

    def env(self, principal: str) -> dict[str, str]:
        """The settings a process needs to be ``principal`` here (passed in its environment,
        never on its command line)."""
        return {
            "BATON_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "BATON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "BATON_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "BATON_KAFKA_SASL_USERNAME": principal,
            "BATON_KAFKA_SASL_PASSWORD": self.password(principal),
            "BATON_KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    @property
    def env_dir(self) -> Path:
        """One ``<principal>.env`` file (0600) per principal, to source in a shell:
        ``set -a; . .cache/kafka-secure/env/operator.env; set +a``."""
        return self.home / "env"

    def _write_env_files(self) -> None:
        for principal in local_principals():
            if principal == BROKER_USER:
                continue
            lines = [f"{k.removeprefix('BATON_')}={v}" for k, v in self.env(principal).items()]
            _private_file(self.env_dir / f"{principal}.env", "\n".join(lines) + "\n")

    def prepare(self) -> None:
        """Certificates and passwords once; if either is missing, the storage is formatted afresh so
        the SCRAM users match the passwords on file."""
        if (
            self.credentials_file.exists()
            and self.ca_file.exists()
            and (self.tls_dir / "broker.pem").exists()
        ):
            known = set(json.loads(self.credentials_file.read_text()))
            if known >= set(local_principals()):
                return
        if self.running():
            raise RuntimeError(
                f"the secured broker runs without its credentials; stop it and remove {self.home}"
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._make_tls()
        _private_file(
            self.credentials_file,
            json.dumps({p: secrets.token_urlsafe(24) for p in local_principals()}, indent=2),
        )

    def start(self, timeout: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._write_env_files()
        super().start(timeout)

    def _format_args(self) -> list[str]:
        """SCRAM users for every principal, from a 0600 argument file deleted right after the format."""
        lines = [
            f"--add-scram\n{mechanism}=[name={name},password={password}]"
            for name, password in json.loads(self.credentials_file.read_text()).items()
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
        ]
        argfile = self.home / "format.args"
        _private_file(argfile, "\n".join(lines) + "\n")
        return [f"@{argfile}"]

    def _listener_config(self) -> list[str]:
        broker_password = self.password(BROKER_USER)
        key = (self.tls_dir / "broker.key").read_text()
        chain = (self.tls_dir / "broker.pem").read_text()
        ca = self.ca_file.read_text()

        def inline(pem: str) -> str:
            return pem.strip().replace("\n", "\\n")

        return [
            f"listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port},"
            f"SSL://127.0.0.1:{self.ssl_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port},SSL://127.0.0.1:{self.ssl_port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL,SSL:SSL",
            "inter.broker.listener.name=SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            *(
                f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{broker_password}";'
                for mechanism in ("scram-sha-512", "scram-sha-256")
            ),
            "ssl.keystore.type=PEM",
            f"ssl.keystore.key={inline(key)}",
            f"ssl.keystore.certificate.chain={inline(chain)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={inline(ca)}",
            "listener.name.controller.ssl.client.auth=required",
            "listener.name.ssl.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:{BROKER_USER};{BROKER_CERT_PRINCIPAL}",
            "auto.create.topics.enable=false",
        ]

    def _after_format(self) -> None:
        """The argument file holds passwords: gone once the storage is formatted (or failed to)."""
        (self.home / "format.args").unlink(missing_ok=True)

    # ------------------------------------------------------------------ certificates

    def _make_tls(self) -> None:

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("Baton local CA", ca_key, ca_key, None, ca=True)
        broker_key = ec.generate_private_key(ec.SECP256R1())
        broker_cert = _certificate("localhost", broker_key, ca_key, ca_cert, ca=False, server=True)
        pem = serialization.Encoding.PEM
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(ca_cert.public_bytes(pem))
        _private_file(self.tls_dir / "ca.key", _key_pem(ca_key))
        _private_file(self.tls_dir / "broker.key", _key_pem(broker_key))
        (self.tls_dir / "broker.pem").write_bytes(broker_cert.public_bytes(pem) + ca_cert.public_bytes(pem))

    def client_certificate(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate signed by the local CA, for the SSL listener (principal ``User:CN=<name>``);
        returns (certificate file, key file)."""

        cert_file = self.tls_dir / "clients" / f"{common_name}.pem"
        key_file = cert_file.with_suffix(".key")
        if not (cert_file.exists() and key_file.exists()):
            ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            ca_key = serialization.load_pem_private_key((self.tls_dir / "ca.key").read_bytes(), None)
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(common_name, key, ca_key, ca_cert, ca=False)
            _private_file(key_file, _key_pem(key))
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_file, key_file


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    *,
    ca: bool,
    server: bool = False,
) -> x509.Certificate:
    """A certificate as Java's and Python's TLS stacks want it: the CA with basic constraints, the
    broker's with ``IP:127.0.0.1, DNS:localhost`` (clients check the host) and both server and client
    use (it is also the broker's client certificate on the controller listener)."""

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name = issuer.subject if issuer is not None else subject
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if server
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())
