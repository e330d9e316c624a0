"""WS-Management SOAP for the Windows Remote Shell (cmd), as Windows writes it.

Parses the requests stock pywinrm sends and builds the answers it parses: ShellId from the
first element with ``Name="ShellId"``, CommandId from the first tag ending in ``CommandId``,
a finished Receive from exactly one ``CommandState/Done`` with an ``ExitCode``, and
``a:RelatesTo`` equal to the request's MessageID. Faults go out with HTTP 500 and a
``WSManFault`` detail carrying Windows' numeric code, which is how pywinrm recognises them.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_COMMAND = _SHELL + "Command"
ACTION_SEND = _SHELL + "Send"
ACTION_RECEIVE = _SHELL + "Receive"
ACTION_SIGNAL = _SHELL + "Signal"
STATE_RUNNING = _SHELL + "CommandState/Running"
STATE_DONE = _SHELL + "CommandState/Done"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"


class WsmanFault(Exception):
    """A request Windows answers with a SOAP fault (HTTP 500)."""

    def __init__(self, code: int, subcode: str, reason: str, value: str = "s:Sender") -> None:
        super().__init__(reason)
        self.code = code  # WSManFault Code, e.g. 2150858793 (0x80338029) for TimedOut
        self.subcode = subcode  # e.g. "w:TimedOut"
        self.reason = reason
        self.value = value  # "s:Sender" (client's fault) or "s:Receiver"


# Windows' own codes and texts (winrm.h ERROR_WSMAN_*; texts as WinRM returns them).
def timed_out() -> WsmanFault:
    """No output within OperationTimeout: pywinrm raises WinRMOperationTimeoutError and retries."""
    return WsmanFault(
        2150858793,
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ",
        "s:Receiver",
    )


def shell_not_found(shell_id: str) -> WsmanFault:
    """Unknown or deleted ShellId (ERROR_WSMAN_INVALID_SHELLID... 0x8033805B)."""
    return WsmanFault(
        2150858843,
        "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
        "was not found on the server. Possible causes are: the specified ShellId is incorrect or "
        "the shell no longer exists on the server. Provide the correct ShellId or create a new "
        "shell and retry the operation. ",
    )


def command_not_found(command_id: str) -> WsmanFault:
    """Unknown CommandId within a known shell."""
    return WsmanFault(
        2150858843,
        "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with CommandId {command_id} failed because the "
        "command was not found on the server. ",
    )


def invalid_xml() -> WsmanFault:
    """A body that is not a SOAP envelope (ERROR_WSMAN_INVALID_XML, 0x8033801A... as seen)."""
    return WsmanFault(
        2150858778,
        "w:SchemaValidationError",
        "The WS-Management service cannot process the request because the XML is invalid.",
    )


def action_not_supported(action: str) -> WsmanFault:
    """An Action or ResourceURI the cmd shell plugin does not serve."""
    return WsmanFault(
        2150858801,
        "a:ActionNotSupported",
        f"The WS-Management service cannot process the request. The action {action} is not "
        "supported by the service.",
    )


def missing_element(name: str) -> WsmanFault:
    """A request without an element the operation needs (code 2150858817, as Windows sends)."""
    return WsmanFault(
        2150858817,
        "w:SchemaValidationError",
        f"WinRM cannot process the request because the request is missing the element titled '{name}'.",
    )


def invalid_parameter() -> WsmanFault:
    """A value Windows rejects with ERROR_INVALID_PARAMETER (87), e.g. an unknown code page."""
    return WsmanFault(87, "w:InvalidParameter", "The parameter is incorrect. ")


@dataclass
class Request:
    """The parts of a WS-Man request the cmd shell needs."""

    action: str
    resource_uri: str
    message_id: str
    shell_id: str | None
    operation_timeout: float  # seconds
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None


def parse_request(data: bytes) -> Request:
    """Parse a SOAP envelope; raise WsmanFault (invalid XML) when it is not one."""
    try:
        # Parsed only after authentication; expat >= 2.4 also caps entity expansion.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as err:
        raise invalid_xml() from err
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None or body is None:
        raise invalid_xml()
    action = _text(header.find("a:Action", NS))
    message_id = _text(header.find("a:MessageID", NS))
    if not action or not message_id:
        raise invalid_xml()
    shell_id = None
    for selector in header.findall("w:SelectorSet/w:Selector", NS):
        if selector.get("Name") == "ShellId":
            shell_id = (selector.text or "").strip()
    options = {
        opt.get("Name", ""): (opt.text or "").strip()
        for opt in header.findall("w:OptionSet/w:Option", NS)
    }
    return Request(
        action=action,
        resource_uri=_text(header.find("w:ResourceURI", NS)),
        message_id=message_id,
        shell_id=shell_id,
        operation_timeout=parse_duration(_text(header.find("w:OperationTimeout", NS))),
        options=options,
        body=body,
    )


def _text(node: ET.Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def parse_duration(text: str, default: float = 60.0) -> float:
    """Seconds of an xs:duration of the simple shape WinRM clients send ("PT20S", "PT1.5S")."""
    if not text.startswith("PT") or not text.endswith("S"):
        return default
    try:
        return max(0.0, float(text[2:-1]))
    except ValueError:
        return default


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        (
            '<s:Envelope xml:lang="en-US" xmlns:s="{s}" xmlns:a="{a}" xmlns:x="{x}" xmlns:w="{w}" '
            'xmlns:rsp="{rsp}" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
            "<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{mid}</a:MessageID>"
            "<a:To>{anon}</a:To><a:RelatesTo>{rel}</a:RelatesTo></s:Header>"
            "<s:Body>{body}</s:Body></s:Envelope>"
        )
        .format(
            action=escape(action),
            mid=str(uuid.uuid4()).upper(),
            anon=ANONYMOUS,
            rel=escape(relates_to),
            body=body,
            **NS,
        )
        .encode("utf-8")
    )


def create_response(req: Request, shell_id: str, address: str, owner: str, client_ip: str) -> bytes:
    """CreateResponse: the shell's EPR (pywinrm takes the first ``Name="ShellId"``) and its state."""
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{SHELL_CMD_URI}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
        "</a:ReferenceParameters></x:ResourceCreated>"
        f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId><rsp:ResourceUri>{SHELL_CMD_URI}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(owner)}</rsp:Owner><rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
        "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>"
        "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
        "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
    )
    return _envelope(
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", req.message_id, body
    )


def command_response(req: Request, command_id: str) -> bytes:
    """CommandResponse carrying the new CommandId."""
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return _envelope(ACTION_COMMAND + "Response", req.message_id, body)


def send_response(req: Request) -> bytes:
    """SendResponse (stdin accepted)."""
    return _envelope(ACTION_SEND + "Response", req.message_id, "<rsp:SendResponse/>")


def signal_response(req: Request) -> bytes:
    """SignalResponse; pywinrm asserts RelatesTo == its MessageID."""
    return _envelope(ACTION_SIGNAL + "Response", req.message_id, "<rsp:SignalResponse/>")


def delete_response(req: Request) -> bytes:
    """DeleteResponse: an empty body; pywinrm asserts RelatesTo == its MessageID."""
    return _envelope(
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", req.message_id, ""
    )


def receive_response(
    req: Request, command_id: str, stdout: bytes, stderr: bytes, exit_code: int | None
) -> bytes:
    """ReceiveResponse with the output ready now; ``exit_code`` None means still running.

    Like Windows, the last answer marks both streams ``End="true"`` and carries the
    CommandState Done with its ExitCode.
    """
    cid = escape(command_id)
    parts = ["<rsp:ReceiveResponse>"]
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            parts.append(
                f'<rsp:Stream Name="{name}" CommandId="{cid}">'
                f"{base64.b64encode(data).decode('ascii')}</rsp:Stream>"
            )
    if exit_code is None:
        parts.append(f'<rsp:CommandState CommandId="{cid}" State="{STATE_RUNNING}"/>')
    else:
        parts.append(f'<rsp:Stream Name="stdout" CommandId="{cid}" End="true"></rsp:Stream>')
        parts.append(f'<rsp:Stream Name="stderr" CommandId="{cid}" End="true"></rsp:Stream>')
        parts.append(
            f'<rsp:CommandState CommandId="{cid}" State="{STATE_DONE}">'
            f"<rsp:ExitCode>{int(exit_code)}</rsp:ExitCode></rsp:CommandState>"
        )
    parts.append("</rsp:ReceiveResponse>")
    return _envelope(ACTION_RECEIVE + "Response", req.message_id, "".join(parts))


def fault_response(fault: WsmanFault, relates_to: str, machine: str) -> bytes:
    """A SOAP fault with Windows' WSManFault detail (send with HTTP 500)."""
    reason = escape(fault.reason)
    body = (
        "<s:Fault><s:Code><s:Value>{value}</s:Value><s:Subcode><s:Value>{sub}</s:Value>"
        '</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason>'
        '<s:Detail><f:WSManFault xmlns:f="{f}" Code="{code}" Machine={machine}>'
        "<f:Message>{reason}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    ).format(
        value=fault.value,
        sub=fault.subcode,
        reason=reason,
        f=NS["f"],
        code=fault.code,
        machine=quoteattr(machine),
    )
    return _envelope(ACTION_FAULT, relates_to or "uuid:00000000-0000-0000-0000-000000000000", body)


def find_body_child(req: Request, local_name: str) -> ET.Element | None:
    """The first element named ``rsp:<local_name>`` in the body (or the body's descendants)."""
    if req.body is None:
        return None
    return req.body.find(f".//rsp:{local_name}", NS)
