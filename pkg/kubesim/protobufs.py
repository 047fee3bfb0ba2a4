"""Kubernetes protobuf request bodies, decoded into the JSON objects kubesim works with.

Why this exists: kubectl's generator commands (`create namespace`, `create configmap`,
`create secret`, `create deployment`, `create job`, `create cronjob`, ...) and every typed
client-go client send built-in objects as `application/vnd.kubernetes.protobuf`, and
client-go does not fall back to JSON when a server answers 415 to protobuf. kube-apiserver
accepts protobuf for every built-in type, so kubesim must decode it too. Responses stay JSON:
those clients also list JSON in their Accept header.

The envelope (k8s.io/apimachinery/pkg/runtime/serializer/protobuf) is the four bytes
`k8s\\x00` followed by a `runtime.Unknown` message: typeMeta {apiVersion, kind}, raw (the
typed proto2 message, e.g. k8s.io.api.core.v1.ConfigMap), contentEncoding and contentType.

`decode` turns that into exactly the dict a JSON client would have sent for the same Go
object: Go's encoding/json over the k8s.io/api structs. The per-type facts that needs (field
number, JSON name, type, repetition, and which fields are Go pointers or lack `omitempty`)
live in `_TABLES`, written from the `generated.proto` files and `types.go` struct tags of
k8s.io/api and k8s.io/apimachinery. Only the types kubectl's generators and common typed
clients send are described; anything else is refused with 415 naming the type (or the
field and where it sits), never silently dropped. (kube-apiserver itself skips fields it
does not know, but a field kubesim lacks is one a real cluster would keep, so dropping it
would make kubesim quietly differ.) Corrupt bytes are answered 400.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any, Final

import msgspec

from kubesim import statuses

MAGIC: Final = b"k8s\x00"
MEDIA_TYPE: Final = "application/vnd.kubernetes.protobuf"

# -- the descriptor table --------------------------------------------------------------------
#
# One entry per message: `Name:` then `jsonName=number:type` tokens. Types:
#   s string   b bool   i32 / i64 (varint; k8s "enums" are strings, never proto enums)
#   bytes      []byte, base64 in JSON (Secret.data values)
#   qty        resource.Quantity: a message holding its canonical string, JSON "100m"
#   ios        intstr.IntOrString: {type, intVal, strVal}, JSON a number or a string
#   time       metav1.Time {seconds, nanos}: RFC 3339 to the second, a zero time is null
#   mtime      metav1.MicroTime: RFC 3339 with microseconds
#   fields     metav1.FieldsV1: its raw bytes are a JSON document
#   Name       a message of this table
#   [T] repeated T      {T} map<string, T> (wire: repeated entries {key = 1, value = 2})
#   ^Name      an embedded Go struct with `json:",inline"`: its fields join the parent's
# Markers, for which zero values a JSON client sends:
#   *T   a Go pointer: gogo-protobuf writes it only when non-nil, so a zero on the wire
#        (replicas: 0, optional: false) is a deliberate value and is kept
#   T!   a JSON tag without omitempty: kept even when zero
#   T~   Go's omitzero (only ObjectMeta.creationTimestamp): a zero time is left out
# Everything else follows omitempty: gogo-protobuf writes every non-pointer scalar even
# when it is zero (`generateName: ""`, `generation: 0`), and encoding/json would drop those.
# Messages are kept whenever they are on the wire: omitempty never drops a Go struct, which
# is why kubectl sends `"resources": {}` and `"status": {}`.

_CONTAINER_FIELDS: Final = """
    name=1:s! image=2:s command=3:[s] args=4:[s] workingDir=5:s ports=6:[ContainerPort]
    env=7:[EnvVar] resources=8:ResourceRequirements volumeMounts=9:[VolumeMount]
    livenessProbe=10:*Probe readinessProbe=11:*Probe lifecycle=12:*Lifecycle
    terminationMessagePath=13:s imagePullPolicy=14:s securityContext=15:*SecurityContext
    stdin=16:b stdinOnce=17:b tty=18:b envFrom=19:[EnvFromSource] terminationMessagePolicy=20:s
    volumeDevices=21:[VolumeDevice] startupProbe=22:*Probe resizePolicy=23:[ContainerResizePolicy]
    restartPolicy=24:*s restartPolicyRules=25:[ContainerRestartRule]
"""

_TABLES: Final[dict[str, str]] = {
    "k8s.io.apimachinery.pkg.apis.meta.v1": """
ObjectMeta: name=1:s generateName=2:s namespace=3:s selfLink=4:s uid=5:s resourceVersion=6:s
    generation=7:i64 creationTimestamp=8:time~ deletionTimestamp=9:*time
    deletionGracePeriodSeconds=10:*i64 labels=11:{s} annotations=12:{s}
    ownerReferences=13:[OwnerReference] finalizers=14:[s] managedFields=17:[ManagedFieldsEntry]
OwnerReference: kind=1:s! name=3:s! uid=4:s! apiVersion=5:s! controller=6:*b
    blockOwnerDeletion=7:*b
ManagedFieldsEntry: manager=1:s operation=2:s apiVersion=3:s time=4:*time fieldsType=6:s
    fieldsV1=7:*fields subresource=8:s
LabelSelector: matchLabels=1:{s} matchExpressions=2:[LabelSelectorRequirement]
LabelSelectorRequirement: key=1:s! operator=2:s! values=3:[s]
DeleteOptions: gracePeriodSeconds=1:*i64 preconditions=2:*Preconditions orphanDependents=3:*b
    propagationPolicy=4:*s dryRun=5:[s] ignoreStoreReadErrorWithClusterBreakingPotential=6:*b
Preconditions: uid=1:*s resourceVersion=2:*s
""",
    "k8s.io.api.core.v1": """
Namespace: metadata=1:ObjectMeta spec=2:NamespaceSpec status=3:NamespaceStatus
NamespaceSpec: finalizers=1:[s]
NamespaceStatus: phase=1:s conditions=2:[NamespaceCondition]
NamespaceCondition: type=1:s! status=2:s! lastTransitionTime=4:time reason=5:s message=6:s
ConfigMap: metadata=1:ObjectMeta data=2:{s} binaryData=3:{bytes} immutable=4:*b
Secret: metadata=1:ObjectMeta data=2:{bytes} type=3:s stringData=4:{s} immutable=5:*b
ServiceAccount: metadata=1:ObjectMeta secrets=2:[ObjectReference]
    imagePullSecrets=3:[LocalObjectReference] automountServiceAccountToken=4:*b
ObjectReference: kind=1:s namespace=2:s name=3:s uid=4:s apiVersion=5:s resourceVersion=6:s
    fieldPath=7:s
LocalObjectReference: name=1:s
Event: metadata=1:ObjectMeta! involvedObject=2:ObjectReference! reason=3:s message=4:s
    source=5:EventSource firstTimestamp=6:time lastTimestamp=7:time count=8:i32 type=9:s
    eventTime=10:mtime series=11:*EventSeries action=12:s related=13:*ObjectReference
    reportingComponent=14:s! reportingInstance=15:s!
EventSource: component=1:s host=2:s
EventSeries: count=1:i32 lastObservedTime=2:mtime
Pod: metadata=1:ObjectMeta spec=2:PodSpec status=3:PodStatus
PodStatus: phase=1:s conditions=2:[PodCondition] message=3:s reason=4:s hostIP=5:s podIP=6:s
    startTime=7:*time qosClass=9:s nominatedNodeName=11:s podIPs=12:[PodIP] resize=14:s
    hostIPs=16:[HostIP] observedGeneration=17:i64
PodCondition: type=1:s! status=2:s! lastProbeTime=3:time lastTransitionTime=4:time reason=5:s
    message=6:s observedGeneration=7:i64
PodIP: ip=1:s!
HostIP: ip=1:s!
PodTemplateSpec: metadata=1:ObjectMeta spec=2:PodSpec
PodSpec: volumes=1:[Volume] containers=2:[Container] restartPolicy=3:s
    terminationGracePeriodSeconds=4:*i64 activeDeadlineSeconds=5:*i64 dnsPolicy=6:s
    nodeSelector=7:{s} serviceAccountName=8:s serviceAccount=9:s nodeName=10:s hostNetwork=11:b
    hostPID=12:b hostIPC=13:b securityContext=14:*PodSecurityContext
    imagePullSecrets=15:[LocalObjectReference] hostname=16:s subdomain=17:s affinity=18:*Affinity
    schedulerName=19:s initContainers=20:[Container] automountServiceAccountToken=21:*b
    tolerations=22:[Toleration] hostAliases=23:[HostAlias] priorityClassName=24:s priority=25:*i32
    dnsConfig=26:*PodDNSConfig shareProcessNamespace=27:*b readinessGates=28:[PodReadinessGate]
    runtimeClassName=29:*s enableServiceLinks=30:*b preemptionPolicy=31:*s overhead=32:{qty}
    topologySpreadConstraints=33:[TopologySpreadConstraint]
    ephemeralContainers=34:[EphemeralContainer] setHostnameAsFQDN=35:*b os=36:*PodOS
    hostUsers=37:*b schedulingGates=38:[PodSchedulingGate] resources=40:*ResourceRequirements
    hostnameOverride=41:*s
"""
    + "Container:" + _CONTAINER_FIELDS
    + "EphemeralContainerCommon:" + _CONTAINER_FIELDS
    + """
EphemeralContainer: ephemeralContainerCommon=1:^EphemeralContainerCommon
    targetContainerName=2:s
ContainerPort: name=1:s hostPort=2:i32 containerPort=3:i32! protocol=4:s hostIP=5:s
EnvVar: name=1:s! value=2:s valueFrom=3:*EnvVarSource
EnvVarSource: fieldRef=1:*ObjectFieldSelector resourceFieldRef=2:*ResourceFieldSelector
    configMapKeyRef=3:*ConfigMapKeySelector secretKeyRef=4:*SecretKeySelector
    fileKeyRef=5:*FileKeySelector
ObjectFieldSelector: apiVersion=1:s fieldPath=2:s!
ResourceFieldSelector: containerName=1:s resource=2:s! divisor=3:qty
ConfigMapKeySelector: localObjectReference=1:^LocalObjectReference key=2:s! optional=3:*b
SecretKeySelector: localObjectReference=1:^LocalObjectReference key=2:s! optional=3:*b
FileKeySelector: volumeName=1:s! path=2:s! key=3:s! optional=4:*b
EnvFromSource: prefix=1:s configMapRef=2:*ConfigMapEnvSource secretRef=3:*SecretEnvSource
ConfigMapEnvSource: localObjectReference=1:^LocalObjectReference optional=2:*b
SecretEnvSource: localObjectReference=1:^LocalObjectReference optional=2:*b
ResourceRequirements: limits=1:{qty} requests=2:{qty} claims=3:[ResourceClaim]
ResourceClaim: name=1:s! request=2:s
VolumeMount: name=1:s! readOnly=2:b mountPath=3:s! subPath=4:s mountPropagation=5:*s
    subPathExpr=6:s recursiveReadOnly=7:*s bindMountOptions=8:[s]
VolumeDevice: name=1:s! devicePath=2:s!
SecurityContext: capabilities=1:*Capabilities privileged=2:*b seLinuxOptions=3:*SELinuxOptions
    runAsUser=4:*i64 runAsNonRoot=5:*b readOnlyRootFilesystem=6:*b
    allowPrivilegeEscalation=7:*b runAsGroup=8:*i64 procMount=9:*s
    windowsOptions=10:*WindowsSecurityContextOptions seccompProfile=11:*SeccompProfile
    appArmorProfile=12:*AppArmorProfile
Capabilities: add=1:[s] drop=2:[s]
SELinuxOptions: user=1:s role=2:s type=3:s level=4:s
SeccompProfile: type=1:s! localhostProfile=2:*s
AppArmorProfile: type=1:s! localhostProfile=2:*s
WindowsSecurityContextOptions: gmsaCredentialSpecName=1:*s gmsaCredentialSpec=2:*s
    runAsUserName=3:*s hostProcess=4:*b
PodSecurityContext: seLinuxOptions=1:*SELinuxOptions runAsUser=2:*i64 runAsNonRoot=3:*b
    supplementalGroups=4:[i64] fsGroup=5:*i64 runAsGroup=6:*i64 sysctls=7:[Sysctl]
    windowsOptions=8:*WindowsSecurityContextOptions fsGroupChangePolicy=9:*s
    seccompProfile=10:*SeccompProfile appArmorProfile=11:*AppArmorProfile
    supplementalGroupsPolicy=12:*s seLinuxChangePolicy=13:*s
Sysctl: name=1:s! value=2:s!
Volume: name=1:s! volumeSource=2:^VolumeSource
VolumeSource: hostPath=1:*HostPathVolumeSource emptyDir=2:*EmptyDirVolumeSource
    secret=6:*SecretVolumeSource persistentVolumeClaim=10:*PersistentVolumeClaimVolumeSource
    downwardAPI=16:*DownwardAPIVolumeSource configMap=19:*ConfigMapVolumeSource
    projected=26:*ProjectedVolumeSource
HostPathVolumeSource: path=1:s! type=2:*s
EmptyDirVolumeSource: medium=1:s sizeLimit=2:*qty mode=3:*i32
SecretVolumeSource: secretName=1:s items=2:[KeyToPath] defaultMode=3:*i32 optional=4:*b
    defaultUser=5:*i64
ConfigMapVolumeSource: localObjectReference=1:^LocalObjectReference items=2:[KeyToPath]
    defaultMode=3:*i32 optional=4:*b defaultUser=5:*i64
KeyToPath: key=1:s! path=2:s! mode=3:*i32 user=4:*i64
PersistentVolumeClaimVolumeSource: claimName=1:s! readOnly=2:b
DownwardAPIVolumeSource: items=1:[DownwardAPIVolumeFile] defaultMode=2:*i32 defaultUser=3:*i64
DownwardAPIVolumeFile: path=1:s! fieldRef=2:*ObjectFieldSelector
    resourceFieldRef=3:*ResourceFieldSelector mode=4:*i32 user=5:*i64
ProjectedVolumeSource: sources=1:[VolumeProjection] defaultMode=2:*i32 defaultUser=3:*i64
VolumeProjection: secret=1:*SecretProjection downwardAPI=2:*DownwardAPIProjection
    configMap=3:*ConfigMapProjection serviceAccountToken=4:*ServiceAccountTokenProjection
SecretProjection: localObjectReference=1:^LocalObjectReference items=2:[KeyToPath]
    optional=4:*b
ConfigMapProjection: localObjectReference=1:^LocalObjectReference items=2:[KeyToPath]
    optional=4:*b
DownwardAPIProjection: items=1:[DownwardAPIVolumeFile]
ServiceAccountTokenProjection: audience=1:s expirationSeconds=2:*i64 path=3:s! user=4:*i64
Toleration: key=1:s operator=2:s value=3:s effect=4:s tolerationSeconds=5:*i64
Probe: handler=1:^ProbeHandler initialDelaySeconds=2:i32 timeoutSeconds=3:i32
    periodSeconds=4:i32 successThreshold=5:i32 failureThreshold=6:i32
    terminationGracePeriodSeconds=7:*i64
ProbeHandler: exec=1:*ExecAction httpGet=2:*HTTPGetAction tcpSocket=3:*TCPSocketAction
    grpc=4:*GRPCAction
ExecAction: command=1:[s]
HTTPGetAction: path=1:s port=2:ios! host=3:s scheme=4:s httpHeaders=5:[HTTPHeader]
    protocol=6:*s
HTTPHeader: name=1:s! value=2:s!
TCPSocketAction: port=1:ios! host=2:s
GRPCAction: port=1:i32! service=2:*s mode=3:*s
Lifecycle: postStart=1:*LifecycleHandler preStop=2:*LifecycleHandler stopSignal=3:*s
LifecycleHandler: exec=1:*ExecAction httpGet=2:*HTTPGetAction tcpSocket=3:*TCPSocketAction
    sleep=4:*SleepAction
SleepAction: seconds=1:i64!
ContainerResizePolicy: resourceName=1:s! restartPolicy=2:s!
ContainerRestartRule: action=1:s exitCodes=2:*ContainerRestartRuleOnExitCodes
ContainerRestartRuleOnExitCodes: operator=1:s values=2:[i32]
PodDNSConfig: nameservers=1:[s] searches=2:[s] options=3:[PodDNSConfigOption]
PodDNSConfigOption: name=1:s value=2:*s
HostAlias: ip=1:s! hostnames=2:[s]
PodReadinessGate: conditionType=1:s!
TopologySpreadConstraint: maxSkew=1:i32! topologyKey=2:s! whenUnsatisfiable=3:s!
    labelSelector=4:*LabelSelector minDomains=5:*i32 nodeAffinityPolicy=6:*s
    nodeTaintsPolicy=7:*s matchLabelKeys=8:[s]
PodSchedulingGate: name=1:s!
PodOS: name=1:s!
Affinity: nodeAffinity=1:*NodeAffinity podAffinity=2:*PodAffinity
    podAntiAffinity=3:*PodAntiAffinity
NodeAffinity: requiredDuringSchedulingIgnoredDuringExecution=1:*NodeSelector
    preferredDuringSchedulingIgnoredDuringExecution=2:[PreferredSchedulingTerm]
NodeSelector: nodeSelectorTerms=1:[NodeSelectorTerm]
NodeSelectorTerm: matchExpressions=1:[NodeSelectorRequirement]
    matchFields=2:[NodeSelectorRequirement]
NodeSelectorRequirement: key=1:s! operator=2:s! values=3:[s]
PreferredSchedulingTerm: weight=1:i32! preference=2:NodeSelectorTerm
PodAffinity: requiredDuringSchedulingIgnoredDuringExecution=1:[PodAffinityTerm]
    preferredDuringSchedulingIgnoredDuringExecution=2:[WeightedPodAffinityTerm]
PodAntiAffinity: requiredDuringSchedulingIgnoredDuringExecution=1:[PodAffinityTerm]
    preferredDuringSchedulingIgnoredDuringExecution=2:[WeightedPodAffinityTerm]
PodAffinityTerm: labelSelector=1:*LabelSelector namespaces=2:[s] topologyKey=3:s!
    namespaceSelector=4:*LabelSelector matchLabelKeys=5:[s] mismatchLabelKeys=6:[s]
WeightedPodAffinityTerm: weight=1:i32! podAffinityTerm=2:PodAffinityTerm
""",
    "k8s.io.api.apps.v1": """
Deployment: metadata=1:ObjectMeta spec=2:DeploymentSpec status=3:DeploymentStatus
DeploymentSpec: replicas=1:*i32 selector=2:*LabelSelector template=3:PodTemplateSpec
    strategy=4:DeploymentStrategy minReadySeconds=5:i32 revisionHistoryLimit=6:*i32 paused=7:b
    progressDeadlineSeconds=9:*i32
DeploymentStrategy: type=1:s rollingUpdate=2:*RollingUpdateDeployment
RollingUpdateDeployment: maxUnavailable=1:*ios maxSurge=2:*ios
DeploymentStatus: observedGeneration=1:i64 replicas=2:i32 updatedReplicas=3:i32
    availableReplicas=4:i32 unavailableReplicas=5:i32 conditions=6:[DeploymentCondition]
    readyReplicas=7:i32 collisionCount=8:*i32 terminatingReplicas=9:*i32
DeploymentCondition: type=1:s! status=2:s! reason=4:s message=5:s lastUpdateTime=6:time
    lastTransitionTime=7:time
""",
    "k8s.io.api.batch.v1": """
Job: metadata=1:ObjectMeta spec=2:JobSpec status=3:JobStatus
JobSpec: parallelism=1:*i32 completions=2:*i32 activeDeadlineSeconds=3:*i64
    selector=4:*LabelSelector manualSelector=5:*b template=6:PodTemplateSpec backoffLimit=7:*i32
    ttlSecondsAfterFinished=8:*i32 completionMode=9:*s suspend=10:*b
    podFailurePolicy=11:*PodFailurePolicy backoffLimitPerIndex=12:*i32 maxFailedIndexes=13:*i32
    podReplacementPolicy=14:*s managedBy=15:*s successPolicy=16:*SuccessPolicy
PodFailurePolicy: rules=1:[PodFailurePolicyRule]
PodFailurePolicyRule: action=1:s! onExitCodes=2:*PodFailurePolicyOnExitCodesRequirement
    onPodConditions=3:[PodFailurePolicyOnPodConditionsPattern]
PodFailurePolicyOnExitCodesRequirement: containerName=1:*s operator=2:s! values=3:[i32]
PodFailurePolicyOnPodConditionsPattern: type=1:s! status=2:s!
SuccessPolicy: rules=1:[SuccessPolicyRule]
SuccessPolicyRule: succeededIndexes=1:*s succeededCount=2:*i32
JobStatus: conditions=1:[JobCondition] startTime=2:*time completionTime=3:*time active=4:i32
    succeeded=5:i32 failed=6:i32 completedIndexes=7:s
    uncountedTerminatedPods=8:*UncountedTerminatedPods ready=9:*i32 failedIndexes=10:*s
    terminating=11:*i32
JobCondition: type=1:s! status=2:s! lastProbeTime=3:time lastTransitionTime=4:time reason=5:s
    message=6:s
UncountedTerminatedPods: succeeded=1:[s] failed=2:[s]
CronJob: metadata=1:ObjectMeta spec=2:CronJobSpec status=3:CronJobStatus
CronJobSpec: schedule=1:s! startingDeadlineSeconds=2:*i64 concurrencyPolicy=3:s suspend=4:*b
    jobTemplate=5:JobTemplateSpec successfulJobsHistoryLimit=6:*i32 failedJobsHistoryLimit=7:*i32
    timeZone=8:*s
CronJobStatus: active=1:[ObjectReference] lastScheduleTime=4:*time lastSuccessfulTime=5:*time
JobTemplateSpec: metadata=1:ObjectMeta spec=2:JobSpec
""",
    "k8s.io.api.autoscaling.v1": """
Scale: metadata=1:ObjectMeta spec=2:ScaleSpec status=3:ScaleStatus
ScaleSpec: replicas=1:i32
ScaleStatus: replicas=1:i32! selector=2:s
""",
    "k8s.io.api.coordination.v1": """
Lease: metadata=1:ObjectMeta spec=2:LeaseSpec
LeaseSpec: holderIdentity=1:*s leaseDurationSeconds=2:*i32 acquireTime=3:*mtime
    renewTime=4:*mtime leaseTransitions=5:*i32 strategy=6:*s preferredHolder=7:*s
""",
}

# (apiVersion, kind) of a runtime.Unknown -> the message its raw bytes hold. DeleteOptions
# is registered in every group version (metav1.AddToGroupVersion), so it matches any.
TOP_LEVEL: Final[dict[tuple[str, str], str]] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Pod"): "Pod",
    ("v1", "Event"): "Event",
    ("apps/v1", "Deployment"): "Deployment",
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("autoscaling/v1", "Scale"): "Scale",
    ("coordination.k8s.io/v1", "Lease"): "Lease",
}
_ANY_VERSION: Final = frozenset({"DeleteOptions"})

_SCALARS: Final = frozenset({"s", "b", "i32", "i64", "bytes", "qty", "ios", "time", "mtime",
                             "fields"})
_VARINT_SCALARS: Final = frozenset({"b", "i32", "i64"})
# the types encoding/json's omitempty drops when zero (it never drops a struct: Time,
# Quantity and IntOrString values, and messages, are written whenever they are present)
_OMITEMPTY: Final = frozenset({"s", "b", "i32", "i64", "bytes"})

# protobuf wire types
_VARINT: Final = 0
_FIXED64: Final = 1
_LEN: Final = 2
_FIXED32: Final = 5

_MAX_DEPTH: Final = 100  # k8s objects nest ~15 deep; this bounds hostile nesting


class Field:
    """One field of a message: how its wire value becomes a JSON member."""

    __slots__ = ("inline", "keep_zero", "label", "message", "name", "number", "omit_zero",
                 "type")

    def __init__(self, name: str, number: int, *, spec: str) -> None:
        match = _FIELD_TYPE.fullmatch(spec)
        if match is None:
            raise ValueError(f"bad field type {spec!r} for {name}")
        self.name = name
        self.number = number
        self.label = "repeated" if match["rep"] else "map" if match["map"] else ""
        self.type: str = match["rep"] or match["map"] or match["one"]
        self.inline = bool(match["inline"])
        self.keep_zero = bool(match["ptr"]) or match["flag"] == "!"
        self.omit_zero = match["flag"] == "~"
        self.message: Message | None = None  # linked after the whole table is read


class Message:
    """A message of the table: its full proto name and its fields by number."""

    __slots__ = ("fields", "full_name")

    def __init__(self, full_name: str) -> None:
        self.full_name = full_name
        self.fields: dict[int, Field] = {}


_FIELD_TYPE: Final = re.compile(
    r"(?P<ptr>\*)?(?P<inline>\^)?(?:\[(?P<rep>\w+)\]|\{(?P<map>\w+)\}|(?P<one>\w+))(?P<flag>[!~])?"
)
_TOKEN: Final = re.compile(r"(\w+)=(\d+):(\S+)")


def _build(tables: dict[str, str]) -> dict[str, Message]:
    """Parse the table, link each field to its message type; ValueError on any slip."""
    messages: dict[str, Message] = {}
    for package, text in tables.items():
        current: Message | None = None
        for token in text.split():
            if token.endswith(":"):
                short = token[:-1]
                if short in messages:
                    raise ValueError(f"message {short} described twice")
                current = messages[short] = Message(f"{package}.{short}")
                continue
            match = _TOKEN.fullmatch(token)
            if match is None or current is None:
                raise ValueError(f"bad descriptor token {token!r} in {package}")
            field = Field(match[1], int(match[2]), spec=match[3])
            if field.number in current.fields:
                raise ValueError(f"{current.full_name} field {field.number} described twice")
            current.fields[field.number] = field
    for message in messages.values():
        for field in message.fields.values():
            if field.type in _SCALARS:
                if field.inline or (field.label == "map" and field.type in _VARINT_SCALARS):
                    raise ValueError(f"{message.full_name}.{field.name}: bad use of scalar")
                continue
            target = messages.get(field.type)
            if target is None:
                raise ValueError(f"{message.full_name}.{field.name}: unknown type {field.type}")
            if field.label == "map" or (field.inline and field.label):
                raise ValueError(f"{message.full_name}.{field.name}: unsupported shape")
            field.message = target
    return messages


MESSAGES: Final[dict[str, Message]] = _build(_TABLES)


# -- decoding --------------------------------------------------------------------------------


Span = tuple[int, int]  # a length-delimited value: buf[low:high]


class _DecodeError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.path: list[str] = []  # JSON names from the top-level object down

    def where(self) -> str:
        return f" at {'.'.join(self.path)}" if self.path else ""


class _CorruptError(_DecodeError):
    """The bytes are not a well-formed protobuf message (answered 400)."""


class _UnsupportedError(_DecodeError):
    """A well-formed message kubesim has no descriptor for (answered 415)."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a JSON client would have sent for this protobuf request body.

    Raises `statuses.ApiError`: 415 for a type (or a field carrying data) kubesim has no
    descriptor for, 400 for bytes that are not a Kubernetes protobuf message.
    """
    if not body.startswith(MAGIC):
        # kube-apiserver's own words for a body without the prefix
        raise statuses.bad_request(
            "provided data does not appear to be a protobuf message, expected prefix "
            "[107 56 115 0]"
        )
    reader = _Reader(body)
    api_version = kind = ""
    try:
        api_version, kind, raw, encoding, content_type = reader.envelope(len(MAGIC))
        if encoding or content_type not in ("", MEDIA_TYPE):
            raise statuses.unsupported_media_type(
                f"kubesim does not decode {kind} ({api_version}) protobuf bodies with "
                f"contentEncoding {encoding!r} and contentType {content_type!r}"
            )
        name = TOP_LEVEL.get((api_version, kind)) or (kind if kind in _ANY_VERSION else None)
        if name is None:
            raise statuses.unsupported_media_type(
                f"kubesim cannot decode {kind or 'an object without a kind'} "
                f"({api_version or 'no apiVersion'}) from protobuf; send it as "
                f"application/json"
            )
        obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
        obj.update(reader.message(raw, MESSAGES[name], depth=0))
        return obj
    except _UnsupportedError as exc:
        raise statuses.unsupported_media_type(
            f"kubesim cannot decode {kind} ({api_version}) from protobuf: {exc}{exc.where()}; "
            f"send it as application/json"
        ) from exc
    except _CorruptError as exc:
        what = f"{kind} ({api_version})" if kind else "the protobuf envelope"
        raise statuses.bad_request(
            f"the body of the request could not be decoded: {what}: {exc}{exc.where()}"
        ) from exc


def _signed(value: int, bits: int) -> int:
    # int32/int64 are plain varints of the two's complement 64-bit value (negative numbers
    # take ten bytes); Go then truncates to the declared width
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _from_varint(kind: str, value: int) -> int | bool:
    if kind == "b":
        return value != 0
    return _signed(value, 32 if kind == "i32" else 64)


def _span(wire: int, value: Any) -> Span:
    if wire != _LEN:
        raise _CorruptError(f"wire type {wire} where a length-delimited value belongs")
    low, high = value
    return int(low), int(high)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            _merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(value)
        else:
            into[key] = value


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAP_ZERO: Final[dict[str, Any]] = {"s": "", "bytes": "", "qty": "0"}


class _Reader:
    """Walks one body; every position is an index into `buf` (no copies of sub-messages)."""

    __slots__ = ("buf",)

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    # -- the wire ------------------------------------------------------------------------------

    def scan(self, low: int, high: int) -> list[tuple[int, int, Any]]:
        """The (number, wire type, value) of each field in buf[low:high], in wire order. A
        varint or fixed-size value is an int, a length-delimited one its Span."""
        buf = self.buf
        fields: list[tuple[int, int, Any]] = []
        pos = low
        while pos < high:
            key, pos = self.varint(pos, high)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _CorruptError("field number 0")
            value: Any
            if wire == _VARINT:
                value, pos = self.varint(pos, high)
            elif wire == _LEN:
                length, pos = self.varint(pos, high)
                if length > high - pos:
                    raise _CorruptError("a length-delimited field runs past its message")
                value = (pos, pos + length)
                pos += length
            elif wire in (_FIXED64, _FIXED32):
                size = 8 if wire == _FIXED64 else 4
                if size > high - pos:
                    raise _CorruptError("a fixed-size field runs past its message")
                value = int.from_bytes(buf[pos:pos + size], "little")
                pos += size
            else:
                # groups (3, 4) are proto1 relics no Kubernetes type uses; 6 and 7 do not exist
                raise _CorruptError(f"unsupported wire type {wire}")
            fields.append((number, wire, value))
        return fields

    def varint(self, pos: int, high: int) -> tuple[int, int]:
        buf = self.buf
        result = shift = 0
        while pos < high:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise _CorruptError("a varint longer than ten bytes")
        raise _CorruptError("a truncated varint")

    def text(self, span: Span) -> str:
        # Go strings need not be UTF-8; encoding/json replaces invalid bytes with U+FFFD
        return self.buf[span[0]:span[1]].decode("utf-8", "replace")

    # -- runtime.Unknown ---------------------------------------------------------------------

    def envelope(self, low: int) -> tuple[str, str, Span, str, str]:
        """runtime.Unknown: typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2,
        contentEncoding = 3, contentType = 4."""
        api_version = kind = encoding = content_type = ""
        raw: Span = (0, 0)
        for number, wire, value in self.scan(low, len(self.buf)):
            if wire != _LEN:
                continue
            if number == 1:
                for inner, inner_wire, inner_value in self.scan(*value):
                    if inner == 1 and inner_wire == _LEN:
                        api_version = self.text(inner_value)
                    elif inner == 2 and inner_wire == _LEN:
                        kind = self.text(inner_value)
            elif number == 2:
                raw = value
            elif number == 3:
                encoding = self.text(value)
            elif number == 4:
                content_type = self.text(value)
        return api_version, kind, raw, encoding, content_type

    # -- typed messages ----------------------------------------------------------------------

    def message(self, span: Span, message: Message, *, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise _CorruptError("messages nested too deeply")
        out: dict[str, Any] = {}
        fields = message.fields
        for number, wire, value in self.scan(*span):
            field = fields.get(number)
            if field is None:
                # gogo-protobuf writes every non-pointer field, so a field kubesim does not
                # know usually arrives holding zeros; those say nothing and are skipped.
                # Anything else would be lost, so it is refused rather than dropped.
                if self.says_nothing(wire, value, depth=depth):
                    continue
                raise _UnsupportedError(
                    f"field {number} of {message.full_name} is not in kubesim's descriptors"
                )
            try:
                self.member(out, field, wire=wire, value=value, depth=depth)
            except _DecodeError as exc:
                if not field.inline:  # an embedded struct has no JSON name of its own
                    exc.path.insert(0, field.name)
                raise
        return out

    def member(self, out: dict[str, Any], field: Field, *, wire: int, value: Any,
               depth: int) -> None:
        name = field.name
        if field.label == "map":
            key, item = self.map_entry(field, _span(wire, value), depth=depth)
            out.setdefault(name, {})[key] = item
        elif field.label == "repeated":
            items: list[Any] = out.setdefault(name, [])
            if wire == _LEN and field.type in _VARINT_SCALARS:
                # packed: one length-delimited run of varints. proto2 Kubernetes types are
                # unpacked on the wire (a varint per element), but decoders accept both.
                pos, high = value
                while pos < high:
                    number, pos = self.varint(pos, high)
                    items.append(_from_varint(field.type, number))
            else:
                items.append(self.value(field, wire=wire, value=value, depth=depth))
        else:
            decoded = self.value(field, wire=wire, value=value, depth=depth)
            if field.inline:
                _merge(out, decoded)
            elif field.message is not None and isinstance(out.get(name), dict):
                _merge(out[name], decoded)  # a message that occurs twice is merged
            elif not decoded and (
                field.omit_zero or (field.type in _OMITEMPTY and not field.keep_zero)
            ):
                out.pop(name, None)  # the last occurrence wins, even a zero one
            else:
                out[name] = decoded

    def value(self, field: Field, *, wire: int, value: Any, depth: int) -> Any:
        kind = field.type
        if kind in _VARINT_SCALARS:
            if wire != _VARINT:
                raise _CorruptError(f"wire type {wire} where a varint belongs")
            return _from_varint(kind, value)
        span = _span(wire, value)
        if field.message is not None:
            return self.message(span, field.message, depth=depth + 1)
        if kind == "s":
            return self.text(span)
        if kind == "bytes":
            return base64.b64encode(self.buf[span[0]:span[1]]).decode("ascii")
        if kind in ("time", "mtime"):
            return self.time(span, micro=kind == "mtime")
        if kind == "qty":
            return self.quantity(span)
        if kind == "ios":
            return self.int_or_string(span)
        return self.fields_v1(span)  # "fields", the last scalar kind

    def map_entry(self, field: Field, span: Span, *, depth: int) -> tuple[str, Any]:
        """A map<string, T> entry: a message {key = 1, value = 2}; either may be absent,
        meaning its zero value."""
        key = ""
        item: Any = None
        for number, wire, value in self.scan(*span):
            if number == 1:
                key = self.text(_span(wire, value))
            elif number == 2:
                item = self.value(field, wire=wire, value=value, depth=depth)
        if item is None:
            item = _MAP_ZERO.get(field.type, {})
        return key, item

    # -- apimachinery types with their own JSON forms ------------------------------------------

    def time(self, span: Span, *, micro: bool) -> str | None:
        """metav1.Time / MicroTime: a Timestamp {seconds = 1, nanos = 2}. An empty message
        is Go's zero time, which encoding/json writes as null. Time is written to the second
        (time.RFC3339), MicroTime to the microsecond."""
        if span[0] == span[1]:
            return None
        seconds = nanos = 0
        for number, wire, value in self.scan(*span):
            if wire != _VARINT:
                raise _CorruptError(f"wire type {wire} in a Timestamp")
            if number == 1:
                seconds = _signed(value, 64)
            elif number == 2:
                nanos = _signed(value, 32)
        seconds += nanos // 1_000_000_000  # time.Unix normalises nanos outside [0, 1e9)
        nanos %= 1_000_000_000
        try:
            when = _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise _CorruptError(f"timestamp {seconds} is out of range") from None
        text = (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
                f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}")
        if micro:
            text += f".{nanos // 1000:06d}"
        return text + "Z"

    def quantity(self, span: Span) -> str:
        """resource.Quantity travels as {string = 1}, its canonical form, which is also its
        JSON. An empty one is the zero Quantity, which Go writes as "0"."""
        text = "0"
        for number, wire, value in self.scan(*span):
            if number == 1:
                text = self.text(_span(wire, value))
        return text

    def int_or_string(self, span: Span) -> int | str:
        """intstr.IntOrString {type = 1, intVal = 2, strVal = 3}: JSON is the number when
        type is 0 (Int), the string when it is 1 (String)."""
        kind = int_value = 0
        str_value = ""
        for number, wire, value in self.scan(*span):
            if number == 1 and wire == _VARINT:
                kind = _signed(value, 64)
            elif number == 2 and wire == _VARINT:
                int_value = _signed(value, 32)
            elif number == 3:
                str_value = self.text(_span(wire, value))
        if kind == 0:
            return int_value
        if kind == 1:
            return str_value
        raise _CorruptError(f"an IntOrString of type {kind}")

    def fields_v1(self, span: Span) -> Any:
        """metav1.FieldsV1 {Raw = 1}: Raw is the JSON of a managed-fields set."""
        raw = b""
        for number, wire, value in self.scan(*span):
            if number == 1:
                low, high = _span(wire, value)
                raw = self.buf[low:high]
        try:
            return msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError as exc:
            raise _CorruptError(f"fieldsV1 is not JSON: {exc}") from None

    def says_nothing(self, wire: int, value: Any, *, depth: int) -> bool:
        """Whether an unknown field holds only zeros: a zero number, an empty string, or a
        message whose own fields all say nothing (gogo writes a zero struct field by field)."""
        if wire != _LEN:
            return bool(value == 0)
        low, high = value
        if low == high:
            return True
        if depth > _MAX_DEPTH:
            return False
        try:
            return all(self.says_nothing(w, v, depth=depth + 1) for _, w, v in self.scan(low, high))
        except _CorruptError:
            return False  # not a message: a non-empty string or bytes, which carries data
