"""kubesim.protobufs: Kubernetes protobuf bodies become the JSON a JSON client would send.

Two kinds of evidence: bodies captured from kubectl 1.37.1 itself (its generators and
`kubectl debug --copy-to`), compared with what the same command prints with
`--dry-run=client -o json`; and bodies built here, byte by byte, for the wire-format corners
kubectl happens not to produce (negative numbers, packed repeats, times, unknown fields,
corrupt input).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubesim import protobufs, statuses

# -- a minimal protobuf writer, for the bodies kubectl does not send ----------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers: the two's complement 64-bit value, ten bytes
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def vi(number: int, value: int) -> bytes:
    """A varint field."""
    return _varint(number << 3) + _varint(value)


def ld(number: int, payload: bytes | str = b"") -> bytes:
    """A length-delimited field: a string, bytes or a nested message."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def entries(number: int, items: dict[str, bytes]) -> bytes:
    """A map<string, T> field: one {key = 1, value = 2} entry per item."""
    return b"".join(ld(number, ld(1, key) + ld(2, value)) for key, value in items.items())


def envelope(api_version: str, kind: str, *, raw: bytes, encoding: str = "",
             content_type: str = "") -> bytes:
    """What client-go sends: the magic, then runtime.Unknown {typeMeta, raw, ...}."""
    type_meta = ld(1, api_version) + ld(2, kind)
    return (protobufs.MAGIC + ld(1, type_meta) + ld(2, raw) + ld(3, encoding)
            + ld(4, content_type))


def meta(name: str) -> bytes:
    return ld(1, ld(1, name))


def decode_error(body: bytes) -> statuses.ApiError:
    with pytest.raises(statuses.ApiError) as caught:
        protobufs.decode(body)
    return caught.value


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DOCKERCONFIGJSON = (
    '{"auths":{"registry.example.com":{"username":"u","password":"p","email":"u@example.com",'
    '"auth":"dTpw"}}}'
)

# -- bodies kubectl 1.37.1 sent to kubesim, and its --dry-run=client -o json of each ------------
#
# configmap: --from-literal=mode=edge --from-literal=replicas=3 --from-file=blob.bin (bytes
# fa..ff 00 c3 28, not UTF-8, so binaryData) --from-file=text.txt; deployment: --replicas=3
# --port=8080; deployment_zero: --replicas=0; job_from_cronjob: --from=cronjob/tick, whose
# template kubesim had defaulted.

CAPTURED: dict[str, tuple[str, dict[str, Any]]] = {
    'namespace': (
        '6b3873000a0f0a02763112094e616d657370616365121e0a160a067465616d2d6112001a0022002a00320038'
        '00420012001a020a001a002200',
        {
            'kind': 'Namespace',
            'apiVersion': 'v1',
            'metadata': {'name': 'team-a'},
            'spec': {},
            'status': {},
        },
    ),
    'configmap': (
        '6b3873000a0f0a0276311209436f6e6669674d617012600a180a0873657474696e677312001a0022002a0032'
        '0038004200120c0a046d6f6465120465646765120d0a087265706c6963617312013312100a08746578742e74'
        '787412046b3d760a1a150a08626c6f622e62696e1209fafbfcfdfeff00c3281a002200',
        {
            'kind': 'ConfigMap',
            'apiVersion': 'v1',
            'metadata': {'name': 'settings'},
            'data': {'mode': 'edge', 'replicas': '3', 'text.txt': 'k=v\n'},
            'binaryData': {'blob.bin': '+vv8/f7/AMMo'},
        },
    ),
    'secret': (
        '6b3873000a0c0a027631120653656372657412370a150a05637265647312001a0022002a0032003800420012'
        '0d0a0270771207733363723d7421120d0a0475736572120561646d696e1a001a002200',
        {
            'kind': 'Secret',
            'apiVersion': 'v1',
            'metadata': {'name': 'creds'},
            'data': {'pw': 'czNjcj10IQ==', 'user': 'YWRtaW4='},
        },
    ),
    'docker_registry': (
        '6b3873000a0c0a027631120653656372657412b5010a140a0470756c6c12001a0022002a0032003800420012'
        '7d0a112e646f636b6572636f6e6669676a736f6e12687b226175746873223a7b2272656769737472792e6578'
        '616d706c652e636f6d223a7b22757365726e616d65223a2275222c2270617373776f7264223a2270222c2265'
        '6d61696c223a2275406578616d706c652e636f6d222c2261757468223a2264547077227d7d7d1a1e6b756265'
        '726e657465732e696f2f646f636b6572636f6e6669676a736f6e1a002200',
        {
            'kind': 'Secret',
            'apiVersion': 'v1',
            'metadata': {'name': 'pull'},
            'data': {'.dockerconfigjson': _b64(DOCKERCONFIGJSON)},
            'type': 'kubernetes.io/dockerconfigjson',
        },
    ),
    'serviceaccount': (
        '6b3873000a140a027631120e536572766963654163636f756e7412170a150a05726f626f7412001a0022002a'
        '003200380042001a002200',
        {'kind': 'ServiceAccount', 'apiVersion': 'v1', 'metadata': {'name': 'robot'}},
    ),
    'deployment': (
        '6b3873000a150a07617070732f7631120a4465706c6f796d656e7412be010a1f0a0377656212001a0022002a'
        '003200380042005a0a0a036170701203776562128c010803120c0a0a0a0361707012037765621a720a1c0a00'
        '12001a0022002a003200380042005a0a0a036170701203776562125212340a056e67696e78120a6e67696e78'
        '3a312e32372a00320b0a00100018903f22002a0042006a007200800100880100900100a201001a0032004200'
        '4a0052005800600068008201008a01009a0100c2010022020a00280038001a0c080010001800200028003800'
        '1a002200',
        {
            'kind': 'Deployment',
            'apiVersion': 'apps/v1',
            'metadata': {'name': 'web', 'labels': {'app': 'web'}},
            'spec': {
                'replicas': 3,
                'selector': {'matchLabels': {'app': 'web'}},
                'template': {
                    'metadata': {'labels': {'app': 'web'}},
                    'spec': {
                        'containers': [
                            {
                                'name': 'nginx',
                                'image': 'nginx:1.27',
                                'ports': [{'containerPort': 8080}],
                                'resources': {},
                            },
                        ],
                    },
                },
                'strategy': {},
            },
            'status': {},
        },
    ),
    'deployment_zero': (
        '6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b5010a210a0469646c6512001a002200'
        '2a003200380042005a0b0a03617070120469646c651281010800120d0a0b0a03617070120469646c651a660a'
        '1d0a0012001a0022002a003200380042005a0b0a03617070120469646c65124512270a056e67696e78120a6e'
        '67696e783a312e32372a0042006a007200800100880100900100a201001a00320042004a0052005800600068'
        '008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200',
        {
            'kind': 'Deployment',
            'apiVersion': 'apps/v1',
            'metadata': {'name': 'idle', 'labels': {'app': 'idle'}},
            'spec': {
                'replicas': 0,
                'selector': {'matchLabels': {'app': 'idle'}},
                'template': {
                    'metadata': {'labels': {'app': 'idle'}},
                    'spec': {
                        'containers': [{'name': 'nginx', 'image': 'nginx:1.27', 'resources': {}}],
                    },
                },
                'strategy': {},
            },
            'status': {},
        },
    ),
    'job': (
        '6b3873000a0f0a0862617463682f763112034a6f62128f010a140a046f6e636512001a0022002a0032003800'
        '4200126d326b0a100a0012001a0022002a00320038004200125712340a046f6e6365120762757379626f781a'
        '0273681a022d631a076563686f2068692a0042006a007200800100880100900100a201001a054e6576657232'
        '0042004a0052005800600068008201008a01009a0100c201001a082000280030003a001a002200',
        {
            'kind': 'Job',
            'apiVersion': 'batch/v1',
            'metadata': {'name': 'once'},
            'spec': {
                'template': {
                    'metadata': {},
                    'spec': {
                        'containers': [
                            {
                                'name': 'once',
                                'image': 'busybox',
                                'command': ['sh', '-c', 'echo hi'],
                                'resources': {},
                            },
                        ],
                        'restartPolicy': 'Never',
                    },
                },
            },
            'status': {},
        },
    ),
    'cronjob': (
        '6b3873000a130a0862617463682f7631120743726f6e4a6f6212a6010a140a047469636b12001a0022002a00'
        '320038004200128b010a0b2a2f35202a202a202a202a1a002a7a0a140a047469636b12001a0022002a003200'
        '38004200126232600a100a0012001a0022002a00320038004200124c12290a047469636b120762757379626f'
        '781a04646174652a0042006a007200800100880100900100a201001a054e65766572320042004a0052005800'
        '600068008201008a01009a0100c201001a001a002200',
        {
            'kind': 'CronJob',
            'apiVersion': 'batch/v1',
            'metadata': {'name': 'tick'},
            'spec': {
                'schedule': '*/5 * * * *',
                'jobTemplate': {
                    'metadata': {'name': 'tick'},
                    'spec': {
                        'template': {
                            'metadata': {},
                            'spec': {
                                'containers': [
                                    {
                                        'name': 'tick',
                                        'image': 'busybox',
                                        'command': ['date'],
                                        'resources': {},
                                    },
                                ],
                                'restartPolicy': 'Never',
                            },
                        },
                    },
                },
            },
            'status': {},
        },
    ),
    'job_from_cronjob': (
        '6b3873000a0f0a0862617463682f763112034a6f6212bb020a88010a086d616e75616c2d3112001a0022002a'
        '00320038004200622b0a2163726f6e6a6f622e6b756265726e657465732e696f2f696e7374616e7469617465'
        '12066d616e75616c6a410a0743726f6e4a6f621a047469636b222439613461313832372d393139662d343535'
        '332d613662632d6530633061633130313161312a0862617463682f7631300112a30132a0010a100a0012001a'
        '0022002a00320038004200128b0112470a047469636b120762757379626f781a04646174652a0042006a142f'
        '6465762f7465726d696e6174696f6e2d6c6f677206416c77617973800100880100900100a2010446696c651a'
        '054e65766572201e320c436c7573746572466972737442004a00520058006000680072008201008a01009a01'
        '1164656661756c742d7363686564756c6572c201001a082000280030003a001a002200',
        {
            'kind': 'Job',
            'apiVersion': 'batch/v1',
            'metadata': {
                'name': 'manual-1',
                'annotations': {'cronjob.kubernetes.io/instantiate': 'manual'},
                'ownerReferences': [
                    {
                        'apiVersion': 'batch/v1',
                        'kind': 'CronJob',
                        'name': 'tick',
                        'uid': '9a4a1827-919f-4553-a6bc-e0c0ac1011a1',
                        'controller': True,
                    },
                ],
            },
            'spec': {
                'template': {
                    'metadata': {},
                    'spec': {
                        'containers': [
                            {
                                'name': 'tick',
                                'image': 'busybox',
                                'command': ['date'],
                                'resources': {},
                                'terminationMessagePath': '/dev/termination-log',
                                'terminationMessagePolicy': 'File',
                                'imagePullPolicy': 'Always',
                            },
                        ],
                        'restartPolicy': 'Never',
                        'terminationGracePeriodSeconds': 30,
                        'dnsPolicy': 'ClusterFirst',
                        'securityContext': {},
                        'schedulerName': 'default-scheduler',
                    },
                },
            },
            'status': {},
        },
    ),
}

# `kubectl debug rich --copy-to=rich-copy --container=dbg --image=busybox --keep-...` of
# RICH_POD (tests/integration/kubesim/test_kubectl_generators.py) as kubesim stored it:
# kubectl reads the pod as JSON and sends its copy, every PodSpec field, as protobuf
DEBUG_COPY = (
    '6b3873000a090a0276311203506f6412870e0a460a09726963682d636f707912001a0764656661756c742200'
    '2a003200380042005a0b0a036170701204726963685a0c0a047469657212046564676562090a046e6f746512'
    '017812a70d0a1d0a0773637261746368121212100a064d656d6f727912060a0436344d690a330a06636f6e66'
    '696712299a01260a0a0a0873657474696e677312130a046d6f646512086170702f6d6f646518800218a40320'
    '010a150a056365727473120c320a0a0563726564731880020a1f0a04686f737412170a150a082f7661722f6c'
    '6f6712094469726563746f72790a120a0464617461120a52080a046461746110010a2f0a04696e666f122782'
    '01240a1f0a066c6162656c7312150a027631120f6d657461646174612e6c6162656c7310a4030a86010a0574'
    '6f6b656e127dd2017a0a11220f0a0361706910971c1a05746f6b656e0a281a260a120a106b7562652d726f6f'
    '742d63612e63727412100a0663612e637274120663612e6372740a2912270a250a096e616d65737061636512'
    '180a02763112126d657461646174612e6e616d6573706163650a0d0a0b0a070a056372656473200110a40312'
    'b2050a03617070121f72656769737472792e6578616d706c652e636f6d2f6e662f7570663a312e3222062d2d'
    '706f72742204383038302a042f73727632120a0468747470100018903f22035443502a00320f0a0010824718'
    '824722035544502a003a0a0a05504c41494e1201763a090a05454d50545912003a1f0a044e4f444512001a15'
    '0a130a027631120d737065632e6e6f64654e616d653a220a0343505512001a1912170a03617070120a6c696d'
    '6974732e6370751a040a02316d3a1e0a02434d12001a161a140a0a0a0873657474696e677312046d6f646518'
    '003a1a0a0353454312001a11220f0a070a056372656473120270771801425f0a0d0a0363707512060a043530'
    '306d0a110a066d656d6f727912070a053235364d69120d0a0363707512060a043130306d121a0a1165706865'
    '6d6572616c2d73746f7261676512050a0331476912100a066d656d6f727912060a0436344d694a150a077363'
    '726174636810001a042f746d70220032004a1b0a06636f6e66696710011a082f6574632f6170702203617070'
    '3200523a0a2e122c0a082f6865616c74687a120a080110001a04687474701a002204485454502a0c0a07582d'
    '50726f626512013110051801200a280130035a190a0d1a0b0a07080010903f1a00120010001802200a280130'
    '0362140a0c0a0a0a046563686f0a0275701204220208056a142f6465762f7465726d696e6174696f6e2d6c6f'
    '67720c49664e6f7450726573656e747a380a170a104e45545f42494e445f534552564943451203414c4c1000'
    '20e80728013001380040005a100a0e52756e74696d6544656661756c748001018801009001019a01140a0443'
    '46475f120c0a0a0a0873657474696e67739a010f0a001a0b0a070a0563726564731000a2010446696c65b201'
    '1f0a130a110a036361740a0a2f746d702f726561647910001801200a2801300312360a036462671207627573'
    '79626f782a0042006a0072007a0e0a0c0a0a5359535f505452414345800100880100900100a2010446696c65'
    '1a06416c77617973200028901c32044e6f6e653a190a106b756265726e657465732e696f2f6f7312056c696e'
    '7578420764656661756c744a0764656661756c7452005800600068007247180120b81720a01f28d00f3a2a0a'
    '1c6e65742e697076342e69705f6c6f63616c5f706f72745f72616e6765120a313032342036353533354a0e4f'
    '6e526f6f744d69736d617463687a060a0470756c6c820104726963688a01046564676592015c0a2b0a140a12'
    '0a100a047a6f6e651202496e1a01611a01621213080a120f0a0d0a0373736412064578697374731a2d122b08'
    '3212270a0d0a0b0a036170701204726963681a166b756265726e657465732e696f2f686f73746e616d659a01'
    '1164656661756c742d7363686564756c6572a2015a0a04696e6974120c62757379626f783a312e33361a0273'
    '681a022d631a04747275652a0042006a142f6465762f7465726d696e6174696f6e2d6c6f67720c49664e6f74'
    '50726573656e74800100880100900100a2010446696c65a80100b201240a0964656469636174656412054571'
    '75616c1a0465646765220a4e6f5363686564756c65b201190a0012064578697374731a0022094e6f45786563'
    '7574652800ba011a0a0831302e312e322e33120e72656769737472792e6c6f63616cc20100c80100d201330a'
    '0931302e302e302e313012117376632e636c75737465722e6c6f63616c1a0a0a056e646f74731201321a070a'
    '0565646e7330d80101e201130a116578616d706c652e636f6d2f7265616479f001008a022b080112047a6f6e'
    '651a0e5363686564756c65416e797761792211120f0a036170701202496e1a04726963681a130a001a002200'
    '2a0032004a005a0072008801001a002200'
)


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_kubectl_generator_bodies_decode_to_what_dry_run_prints(name: str) -> None:
    body, dry_run = CAPTURED[name]
    assert protobufs.decode(bytes.fromhex(body)) == dry_run


def test_debug_copy_of_a_rich_pod_keeps_every_field() -> None:
    pod = protobufs.decode(bytes.fromhex("".join(DEBUG_COPY)))
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    assert pod["metadata"] == {"name": "rich-copy", "namespace": "default",
                               "labels": {"app": "rich", "tier": "edge"},
                               "annotations": {"note": "x"}}
    spec = pod["spec"]
    app, debugger = spec["containers"]
    assert debugger == {"name": "dbg", "image": "busybox", "resources": {},
                        "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
                        "terminationMessagePolicy": "File"}
    assert spec["shareProcessNamespace"] is True
    # IntOrString both ways, and the embedded ProbeHandler's members on the Probe itself
    assert app["livenessProbe"]["httpGet"]["port"] == "http"
    assert app["readinessProbe"]["tcpSocket"] == {"port": 8080}
    assert app["readinessProbe"]["timeoutSeconds"] == 2
    assert app["startupProbe"]["exec"] == {"command": ["cat", "/tmp/ready"]}
    assert app["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    # Quantities keep their canonical strings, in maps and alone
    assert app["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"},
                                "requests": {"cpu": "100m", "ephemeral-storage": "1Gi",
                                             "memory": "64Mi"}}
    assert spec["volumes"][0] == {"name": "scratch",
                                  "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
    # embedded LocalObjectReference: `name` sits beside key/optional, not under it
    env = {e["name"]: e for e in app["env"]}
    assert env["CM"]["valueFrom"] == {
        "configMapKeyRef": {"name": "settings", "key": "mode", "optional": False}}
    assert env["CPU"]["valueFrom"]["resourceFieldRef"]["divisor"] == "1m"
    assert env["EMPTY"] == {"name": "EMPTY"}
    assert app["envFrom"] == [{"prefix": "CFG_", "configMapRef": {"name": "settings"}},
                              {"secretRef": {"name": "creds", "optional": False}}]
    # Go pointers set to zero or false are values a JSON client sends too ...
    assert app["securityContext"]["runAsGroup"] == 0
    assert app["securityContext"]["privileged"] is False
    assert app["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["terminationGracePeriodSeconds"] == 0
    assert spec["priority"] == 0
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["tolerations"][1] == {"operator": "Exists", "effect": "NoExecute",
                                      "tolerationSeconds": 0}
    # ... while a plain false is what omitempty leaves out (the pod said hostNetwork: false)
    assert "hostNetwork" not in spec
    assert app["stdin"] is True and app["tty"] is True
    assert spec["securityContext"]["supplementalGroups"] == [3000, 4000]
    projected = next(v for v in spec["volumes"] if v["name"] == "token")["projected"]
    assert projected["sources"][0] == {"serviceAccountToken": {
        "audience": "api", "expirationSeconds": 3607, "path": "token"}}
    assert projected["sources"][3] == {"secret": {"name": "creds", "optional": True}}
    node = spec["affinity"]["nodeAffinity"]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}
    assert spec["dnsConfig"]["options"] == [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
    assert spec["topologySpreadConstraints"][0]["labelSelector"] == {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["rich"]}]}
    assert pod["status"] == {}


# -- zero values: what gogo-protobuf always writes and what encoding/json would send ----------


def test_zero_scalars_follow_the_json_tags() -> None:
    container = (ld(1, "") + ld(2, "")                  # name (no omitempty), image
                 + ld(6, vi(2, 0) + vi(3, 0))           # hostPort 0, containerPort 0 (kept)
                 + ld(8) + vi(16, 0))                   # resources {}, stdin false
    template = meta("") + ld(2, ld(2, container))
    spec = (vi(1, 0)                                    # replicas: *int32, zero is a value
            + ld(3, template) + ld(4) + vi(5, 0) + vi(7, 0))
    metadata = ld(1, "web") + ld(2, "") + vi(7, 0) + ld(8)  # generation 0, zero creation time
    body = envelope("apps/v1", "Deployment", raw=ld(1, metadata) + ld(2, spec) + ld(3))
    assert protobufs.decode(body) == {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "template": {"metadata": {},
                         "spec": {"containers": [{"name": "", "ports": [{"containerPort": 0}],
                                                  "resources": {}}]}},
            "strategy": {},
        },
        "status": {},
    }


def test_negative_and_overwide_integers() -> None:
    security = vi(4, -1) + vi(8, -(2**40))              # runAsUser, runAsGroup: int64
    container = ld(1, "c") + ld(6, vi(2, -5) + vi(3, 2**32 + 80)) + ld(15, security)
    raw = meta("p") + ld(2, ld(2, container))
    pod = protobufs.decode(envelope("v1", "Pod", raw=raw))
    port = pod["spec"]["containers"][0]["ports"][0]
    # an int32 comes as a ten-byte varint when negative; Go truncates a wider value to 32 bits
    assert port == {"hostPort": -5, "containerPort": 80}
    assert pod["spec"]["containers"][0]["securityContext"] == {"runAsUser": -1,
                                                               "runAsGroup": -(2**40)}


def test_repeated_scalars_packed_and_unpacked() -> None:
    packed = ld(4, _varint(3) + _varint(-4))
    security = vi(4, 1) + vi(4, 2) + packed + vi(2, 0)   # supplementalGroups, runAsUser 0
    pod = protobufs.decode(envelope("v1", "Pod", raw=meta("p") + ld(2, ld(14, security))))
    assert pod["spec"]["securityContext"] == {"supplementalGroups": [1, 2, 3, -4],
                                              "runAsUser": 0}


def test_int_or_string() -> None:
    rolling = ld(1, vi(1, 1) + ld(3, "25%")) + ld(2, vi(1, 0) + vi(2, 2))
    spec = ld(4, ld(1, "RollingUpdate") + ld(2, rolling))
    deployment = protobufs.decode(envelope("apps/v1", "Deployment", raw=meta("d") + ld(2, spec)))
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 2}}
    broken = ld(4, ld(2, ld(1, vi(1, 7))))
    error = decode_error(envelope("apps/v1", "Deployment", raw=meta("d") + ld(2, broken)))
    assert error.code == 400
    assert "IntOrString" in error.message
    assert "spec.strategy.rollingUpdate.maxUnavailable" in error.message


def test_maps_of_quantities_and_missing_entry_halves() -> None:
    limits = entries(1, {"cpu": ld(1, "250m")}) + ld(1, ld(1, "memory"))  # value absent: zero
    requests = ld(2, ld(2, ld(1, "1Gi")))                             # key absent: ""
    container = ld(1, "c") + ld(8, limits + requests)
    pod = protobufs.decode(envelope("v1", "Pod", raw=meta("p") + ld(2, ld(2, container))))
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "250m", "memory": "0"}, "requests": {"": "1Gi"}}


def test_bytes_are_base64_and_strings_stay_text() -> None:
    raw = (meta("s") + entries(2, {"blob": b"\x00\xff\xfe"}) + ld(2, ld(1, "empty"))
           + entries(4, {"plain": b"x"}) + ld(3, "Opaque") + vi(5, 0))
    assert protobufs.decode(envelope("v1", "Secret", raw=raw)) == {
        "kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"},
        "data": {"blob": "AP/+", "empty": ""}, "stringData": {"plain": "x"},
        "type": "Opaque", "immutable": False,
    }


def test_invalid_utf8_becomes_the_replacement_character_as_in_go() -> None:
    raw = ld(1, ld(1, b"bad\xffname"))
    assert protobufs.decode(envelope("v1", "ConfigMap", raw=raw))["metadata"] == {
        "name": "bad\ufffdname"}


# -- times ------------------------------------------------------------------------------------

# 2024-05-06T07:08:09Z
_SECONDS = 1714979289


def test_time_is_rfc3339_to_the_second_and_zero_time_is_null() -> None:
    stamp = vi(1, _SECONDS) + vi(2, 999_999_999)
    managed = (ld(1, "kubectl") + ld(2, "Update") + ld(3, "v1") + ld(4, stamp)
               + ld(6, "FieldsV1") + ld(7, ld(1, b'{"f:data":{}}')))
    metadata = (ld(1, "cm") + ld(8, stamp) + ld(9)      # deletionTimestamp: a zero *Time
                + ld(17, managed))
    cm = protobufs.decode(envelope("v1", "ConfigMap", raw=ld(1, metadata)))
    assert cm["metadata"] == {
        "name": "cm",
        "creationTimestamp": "2024-05-06T07:08:09Z",   # Time drops the fraction
        "deletionTimestamp": None,
        "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                           "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:data": {}}}],
    }


def test_micro_time_negative_nanos_and_the_epoch() -> None:
    event = (meta("e") + ld(2, ld(1, "Pod") + ld(3, "p"))
             + ld(6)                                             # firstTimestamp: zero
             + ld(7, vi(1, 0))                                   # lastTimestamp: the epoch
             + ld(10, vi(1, _SECONDS) + vi(2, 123_456_789))      # eventTime: MicroTime
             + vi(8, 2) + ld(14, "") + ld(15, ""))
    decoded = protobufs.decode(envelope("v1", "Event", raw=event))
    assert decoded["firstTimestamp"] is None
    assert decoded["lastTimestamp"] == "1970-01-01T00:00:00Z"
    assert decoded["eventTime"] == "2024-05-06T07:08:09.123456Z"
    assert decoded["reportingComponent"] == "" and decoded["reportingInstance"] == ""
    assert decoded["involvedObject"] == {"kind": "Pod", "name": "p"}
    lease = ld(2, ld(1, "me") + vi(2, 15) + ld(4, vi(1, _SECONDS) + vi(2, -1)) + vi(5, 0))
    body = envelope("coordination.k8s.io/v1", "Lease", raw=meta("l") + lease)
    spec = protobufs.decode(body)["spec"]
    # time.Unix normalises nanos outside [0, 1e9): one nanosecond before the second
    assert spec == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                    "renewTime": "2024-05-06T07:08:08.999999Z", "leaseTransitions": 0}


def test_time_out_of_range_is_a_bad_request() -> None:
    metadata = ld(1, "cm") + ld(8, vi(1, 2**62))
    error = decode_error(envelope("v1", "ConfigMap", raw=ld(1, metadata)))
    assert error.code == 400
    assert "metadata.creationTimestamp" in error.message


# -- structure --------------------------------------------------------------------------------


def test_embedded_structs_join_their_parent() -> None:
    volume = ld(1, "cfg") + ld(2, ld(19, ld(1, ld(1, "settings")) + vi(3, 420) + vi(4, 0)))
    probe = ld(1, ld(2, ld(1, "/healthz") + ld(2, vi(2, 8080)))) + vi(4, 10)
    env = ld(1, "MODE") + ld(3, ld(3, ld(1, ld(1, "settings")) + ld(2, "mode")))
    container = ld(1, "c") + ld(7, env) + ld(10, probe)
    pod = protobufs.decode(envelope("v1", "Pod", raw=meta("p") + ld(2, ld(1, volume)
                                                               + ld(2, container))))
    assert pod["spec"]["volumes"] == [{"name": "cfg", "configMap": {
        "name": "settings", "defaultMode": 420, "optional": False}}]
    container_json = pod["spec"]["containers"][0]
    assert container_json["env"] == [{"name": "MODE", "valueFrom": {
        "configMapKeyRef": {"name": "settings", "key": "mode"}}}]
    assert container_json["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}


def test_a_repeated_message_field_merges_and_a_repeated_scalar_takes_the_last() -> None:
    metadata = (ld(1, "first") + ld(11, ld(1, "a") + ld(2, "1")) + ld(1, "second")
                + ld(2, "gen-") + ld(2, ""))
    raw = ld(1, metadata) + ld(1, ld(11, ld(1, "b") + ld(2, "2")) + ld(14, "f"))
    assert protobufs.decode(envelope("v1", "ConfigMap", raw=raw))["metadata"] == {
        "name": "second", "labels": {"a": "1", "b": "2"}, "finalizers": ["f"]}


def test_delete_options_under_any_group_version() -> None:
    raw = (vi(1, 0) + ld(2, ld(1, "uid-1") + ld(2, "42")) + vi(3, 0) + ld(4, "Foreground")
           + ld(5, "All"))
    for api_version in ("v1", "apps/v1", "meta.k8s.io/v1"):
        assert protobufs.decode(envelope(api_version, "DeleteOptions", raw=raw)) == {
            "kind": "DeleteOptions", "apiVersion": api_version, "gracePeriodSeconds": 0,
            "preconditions": {"uid": "uid-1", "resourceVersion": "42"},
            "orphanDependents": False, "propagationPolicy": "Foreground", "dryRun": ["All"],
        }


def test_scale() -> None:
    raw = meta("web") + ld(2, vi(1, 3)) + ld(3, vi(1, 0) + ld(2, ""))
    assert protobufs.decode(envelope("autoscaling/v1", "Scale", raw=raw)) == {
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"},
        "spec": {"replicas": 3}, "status": {"replicas": 0},
    }


# -- what kubesim cannot decode ----------------------------------------------------------------


def test_unknown_fields_holding_only_zeros_are_skipped() -> None:
    # a newer client's non-pointer fields arrive even when unset: zeros say nothing
    spec = ld(2, ld(1, "c")) + ld(44) + vi(99, 0) + ld(98, ld(1) + vi(2, 0) + ld(3, ld(1)))
    pod = protobufs.decode(envelope("v1", "Pod", raw=meta("p") + ld(2, spec)))
    assert pod["spec"] == {"containers": [{"name": "c"}]}


def test_unknown_fields_with_data_are_refused_naming_type_and_place() -> None:
    claim = ld(39, ld(1, "gpu"))                        # PodSpec.resourceClaims: not described
    template = meta("") + ld(2, ld(2, ld(1, "c")) + claim)
    error = decode_error(envelope("apps/v1", "Deployment", raw=meta("d") + ld(2, ld(3, template))))
    assert error.code == 415
    assert error.reason == "UnsupportedMediaType"
    assert "Deployment (apps/v1)" in error.message
    assert "field 39 of k8s.io.api.core.v1.PodSpec" in error.message
    assert "at spec.template.spec" in error.message


@pytest.mark.parametrize(("api_version", "kind"), [
    ("v1", "Service"), ("apps/v1", "ReplicaSet"), ("v2", "ConfigMap"), ("", ""),
])
def test_unknown_types_are_415_naming_them(api_version: str, kind: str) -> None:
    error = decode_error(envelope(api_version, kind, raw=meta("x")))
    assert error.code == 415
    assert (kind or "without a kind") in error.message


def test_content_encodings_are_415() -> None:
    error = decode_error(envelope("v1", "ConfigMap", raw=meta("x"), encoding="gzip"))
    assert error.code == 415
    assert "gzip" in error.message


@pytest.mark.parametrize(("body", "words"), [
    (b'{"kind": "ConfigMap"}', "expected prefix"),
    (protobufs.MAGIC + b"\x0a", "truncated varint"),
    (protobufs.MAGIC + b"\x0a\x05ab", "runs past"),
    (protobufs.MAGIC + b"\x0b", "wire type 3"),
    (protobufs.MAGIC + b"\x00", "field number 0"),
    (protobufs.MAGIC + b"\x08" + b"\xff" * 11, "longer than ten bytes"),
    (envelope("v1", "ConfigMap", raw=vi(1, 5)), "metadata"),  # a varint where a message belongs
    (envelope("v1", "ConfigMap", raw=ld(1, ld(1, "x") + ld(17, ld(7, ld(1, b"{"))))),
     "fieldsV1 is not JSON"),
])
def test_corrupt_bodies_are_400(body: bytes, words: str) -> None:
    error = decode_error(body)
    assert error.code == 400
    assert error.reason == "BadRequest"
    assert words in error.message


def test_hostile_nesting_is_an_api_error_not_a_crash() -> None:
    nested = b""
    for _ in range(5000):
        nested = ld(50, nested + vi(1, 1))
    error = decode_error(envelope("v1", "ConfigMap", raw=nested))
    assert error.code in (400, 415)


def _damaged(body: bytes) -> list[bytes]:
    out = [body[:cut] for cut in range(len(body))]
    out += [body[:i] + bytes([body[i] ^ flip]) + body[i + 1:]
            for i in range(len(body)) for flip in (0x80, 0xFF)]
    return out


@pytest.mark.parametrize("name", [*sorted(CAPTURED), "debug_copy"])
def test_every_truncation_and_byte_flip_is_an_object_or_an_api_error(name: str) -> None:
    hexed = "".join(DEBUG_COPY) if name == "debug_copy" else CAPTURED[name][0]
    for damaged in _damaged(bytes.fromhex(hexed)):
        try:
            decoded = protobufs.decode(damaged)
        except statuses.ApiError as exc:
            assert exc.code in (400, 415), exc.message
        else:
            assert isinstance(decoded, dict)


# -- the descriptor table ---------------------------------------------------------------------


def test_every_top_level_type_is_described() -> None:
    for (api_version, kind), message in protobufs.TOP_LEVEL.items():
        assert protobufs.MESSAGES[message].full_name.endswith(f".{kind}"), api_version


@pytest.mark.parametrize("table", [
    "Thing: a=1:s a=1:i32",                 # a number twice
    "Thing: a=1:Missing",                   # a type nobody describes
    "Thing: a=1:{i32}",                     # a map of varints: no Kubernetes type has one
    "a=1:s",                                # a field before any message
    "Thing: a=1:[^Thing]",                  # an embedded struct cannot repeat
    "Thing: a=one:s",
])
def test_malformed_tables_are_refused_at_import(table: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        protobufs._build({"test.v1": table})
