"""The images the service lists for its node agents: GET /supportedimages, and /nodeagentskus of old.

The image catalogue is what Azure Batch lists for its current Linux node agents, as far as public
sources show it (researched 2026; each entry names its source). The emulator runs every task as a
local process whatever image a pool names: the catalogue only lets clients that look an image up
before creating a pool (`list_supported_images`, or `list_node_agent_skus` for azure-batch <= 6)
find the same entries they find on Azure. Windows images are left out: the emulator runs POSIX
command lines only.

`verificationType` follows one rule: "verified" for an image that Microsoft's own Batch documents or
Batch service notices name with its node agent, "unverified" for one found paired with the agent
only in users' code. The service marks an image "verified" when Batch tests it with that agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from batch_emulator import wire

# Sources (all public):
#   MS_SPOT    learn.microsoft.com/azure/batch/batch-spot-vms (pool example: Canonical ubuntu-24_04-lts
#              server with "batch.node.ubuntu 24.04")
#   BATCH_200  github.com/Azure/Batch/issues/200 "Batch Support for Ubuntu 22.04 LTS Ending": support for
#              "batch.node.ubuntu 22.04" ends after 2027-06-30; microsoft-dsvm:ubuntu-hpc:2404 is the
#              migration target for microsoft-dsvm images
#   BATCH_181  github.com/Azure/Batch/issues/181 and /169: almalinux:almalinux-x86_64 is the Batch
#              migration target for Enterprise Linux ("batch.node.el 8" SKUs 8-gen1, 8-gen2)
#   USERS      users' pool definitions on GitHub pairing the image with the agent (AlmaLinux 9-gen2 with
#              "batch.node.el 9"; ubuntu-hpc 2204 listed with DockerCompatible for "batch.node.ubuntu
#              22.04"); Debian and Rocky images follow the publishers' names (debian:debian-12:12,
#              resf:rockylinux-x86_64:9-base) with no Batch document found that lists them.
UBUNTU_2204_END = datetime(2027, 6, 30, tzinfo=UTC)  # BATCH_200


@dataclass(frozen=True)
class Image:
    publisher: str
    offer: str
    sku: str
    agent: str  # the node agent SKU id
    verified: bool
    capabilities: tuple[str, ...] = ()
    end_of_life: datetime | None = None
    source: str = field(default="", compare=False)

    def to_wire(self) -> dict:
        out: dict = {
            "nodeAgentSKUId": self.agent,
            "imageReference": self.reference(),
            "osType": "linux",
            "verificationType": "verified" if self.verified else "unverified",
        }
        if self.capabilities:
            out["capabilities"] = list(self.capabilities)
        if self.end_of_life:
            out["batchSupportEndOfLife"] = wire.rfc3339(self.end_of_life)
        return out

    def reference(self) -> dict:
        return {"publisher": self.publisher, "offer": self.offer, "sku": self.sku, "version": "latest"}


CATALOGUE: tuple[Image, ...] = (
    Image("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04", True, source="MS_SPOT"),
    Image(
        "microsoft-dsvm",
        "ubuntu-hpc",
        "2404",
        "batch.node.ubuntu 24.04",
        True,
        ("DockerCompatible",),
        source="BATCH_200",
    ),
    Image(
        "canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts",
        "batch.node.ubuntu 22.04",
        True,
        end_of_life=UBUNTU_2204_END,
        source="BATCH_200",
    ),
    Image(
        "microsoft-dsvm",
        "ubuntu-hpc",
        "2204",
        "batch.node.ubuntu 22.04",
        True,
        ("DockerCompatible",),
        UBUNTU_2204_END,
        source="BATCH_200, USERS",
    ),
    Image("almalinux", "almalinux-x86_64", "9-gen2", "batch.node.el 9", True, source="BATCH_181, USERS"),
    Image("resf", "rockylinux-x86_64", "9-base", "batch.node.el 9", False, source="USERS"),
    Image("debian", "debian-12", "12", "batch.node.debian 12", False, source="USERS"),
    Image("debian", "debian-12", "12-gen2", "batch.node.debian 12", False, source="USERS"),
)


def supported_images() -> list[dict]:
    """The `value` items of GET /supportedimages, in catalogue order."""
    return [image.to_wire() for image in CATALOGUE]


def node_agent_skus() -> list[dict]:
    """GET /nodeagentskus as the service answered it until api 2019-06-01.9.0: one item per node agent,
    with the images verified for it."""
    skus: dict[str, dict] = {}
    for image in CATALOGUE:
        sku = skus.setdefault(image.agent, {"id": image.agent, "verifiedImageReferences": [], "osType": "linux"})
        if image.verified:
            sku["verifiedImageReferences"].append(image.reference())
    return list(skus.values())
