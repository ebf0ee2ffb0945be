"""A fake A7670 for the firmware tests on MicroPython, behind the non-blocking stream the firmware reads.

It answers the AT dialect the way the A76XX manual prints it (CR LF around every response, `>` prompts
without a line end, `+CMQTT...` results after `OK`, voice-call and SMS results as in
shared/reference/a7670-at.md) and produces the quirks of real modems on request. Tests steer it through
attributes: `replies` (command prefix -> text printed instead of the answer), `pub_results` /
`connect_results` (error codes for the next publishes / connects), `start_before_ok`, `gnss`,
`on_publish`, `silent`, `outcomes` (number -> "answer", "busy", "no_answer", or nothing at all),
`sms_fail` (how many SMS to refuse); it records `dialled` and `texts`. These tests run in the pendant's
heap budget (tests/firmware/firmware_runner.py HEAP).
"""

IMEI = "864321050123456"
CPSI_LTE = "+CPSI: LTE,Online,204-08,0x2B5C,27013936,257,EUTRAN-BAND20,6300,5,5,-94,-850,-545,15"
GNSS_FIX = "+CGNSSINFO: 2,09,05,00,5222.386060,N,00453.532180,E,291125,080000.0,5.2,0.0,0.0,1.9,1.6,1.0"
# command: the response line printed before OK ("" for OK alone)
ANSWERS = {
    "AT": "",
    "ATE0": "",
    "AT+CMEE=1": "",
    "AT+CPIN?": "+CPIN: READY",
    "AT+CGSN": IMEI,
    "AT+CICCID": "+ICCID: 8931080019071234567",
    "AT+CEREG?": "+CEREG: 0,1",
    "AT+CREG?": "+CREG: 0,1",
    "AT+CSQ": "+CSQ: 21,99",
    "AT+CPSI?": CPSI_LTE,
    "AT+CCLK?": '+CCLK: "25/11/29,09:00:00+04"',
    "AT+CVHU=0": "",
    "AT+CLIP=1": "",
    "AT+CMGF=1": "",
    "AT+CSCLK=1": "",
    "AT+CGNSSPWR=0": "",
    "ATA": "",
}
PROMPTED = ("WILLTOPIC", "WILLMSG", "SUBTOPIC", "TOPIC", "PAYLOAD")  # AT+CMQTT<name>=0,<len>... -> > data


class FakeA7670:
    """One modem as the firmware sees it: readinto(buf) (None while nothing is there), write(), close()."""

    def __init__(self):
        self.commands = []  # the last 40 command lines received (str, without CR)
        self.published = []  # (topic, payload) of every successful AT+CMQTTPUB
        self.subscribed = []
        self.connects = []
        self.data = {}  # the last data written after each prompted command, by its name
        self.replies = {}
        self.pub_results = []
        self.connect_results = []
        self.start_before_ok = True  # the quirk: +CMQTTSTART: 0 before OK
        self.gnss = "+CGNSSINFO: ,,,,,,,,,,,,,,,"
        self.on_publish = None  # fn(topic, payload) after a successful publish
        self.on_subscribe = None  # fn(topic) after a successful subscribe
        self.silent = False
        self.closed = False
        self.outcomes = {}
        self.sms_fail = 0
        self.dialled = []
        self.texts = []  # (number, text) of every SMS taken
        self._sms = None  # the number of the SMS being typed, and its text so far
        self._rx = bytearray()
        self._line = bytearray()
        self._need = 0
        self._for = None

    @property
    def will(self):
        return [self.data.get("WILLTOPIC"), self.data.get("WILLMSG")]

    def readinto(self, buf):
        if not self._rx:
            return 0 if self.closed else None
        n = min(len(buf), len(self._rx))
        buf[:n] = self._rx[:n]
        self._rx[0:n] = b""  # in place: no new copy of the rest each read
        return n

    def write(self, data):
        for byte in bytes(data):
            if self._sms:
                if byte == 26:  # Ctrl-Z: send it
                    number, text = self._sms
                    self._sms = None
                    if self.sms_fail:
                        self.sms_fail -= 1
                        self.send("\r\n+CMS ERROR: 500\r\n")
                    else:
                        self.texts.append((number, text.decode()))
                        self.send("\r\n+CMGS: %d\r\n\r\nOK\r\n" % len(self.texts))
                else:
                    self._sms[1] += bytes((byte,))
            elif self._need:
                self.data[self._for] += bytes((byte,))
                self._need -= 1
                if not self._need:
                    self.send("\r\nOK\r\n")
            elif byte == 13:
                command = bytes(self._line).decode()
                self._line = bytearray()
                if len(self.commands) >= 40:
                    self.commands.pop(0)
                self.commands.append(command)
                if not self.silent:
                    self._command(command)
            elif byte != 10:
                self._line.append(byte)
        return len(data)

    def close(self):
        """End the stream (the modem went away)."""
        self.closed = True

    def send(self, data):
        """Make the modem print data (str or bytes) now."""
        self._rx += data.encode() if type(data) is str else data

    def deliver(self, topic, payload, topic_chunks=1, payload_chunks=1):
        """Print an incoming MQTT message as the +CMQTTRX* URCs, topic and payload split into chunks."""
        self.send(b"\r\n+CMQTTRXSTART: 0,%d,%d\r\n" % (len(topic), len(payload)))
        for name, body, chunks in ((b"TOPIC", topic, topic_chunks), (b"PAYLOAD", payload, payload_chunks)):
            size = (len(body) + chunks - 1) // chunks
            for start in range(0, len(body), size):
                part = body[start : start + size]
                self.send(b"+CMQTTRX%s: 0,%d\r\n%s\r\n" % (name, len(part), part))
        self.send(b"+CMQTTRXEND: 0\r\n")

    def ring(self, number):
        """An incoming call from number: RING and +CLIP, as with AT+CLIP=1."""
        self.send('\r\nRING\r\n\r\n+CLIP: "%s",145,,,,0\r\n' % number)

    def count(self, prefix):
        """How many commands started with prefix."""
        return len([c for c in self.commands if c.startswith(prefix)])

    def _command(self, cmd):
        for prefix, reply in self.replies.items():
            if cmd.startswith(prefix):
                self.send(reply)
                return
        if cmd in ANSWERS:
            self.send(("\r\n%s\r\n" % ANSWERS[cmd] if ANSWERS[cmd] else "") + "\r\nOK\r\n")
            return
        name, _, args = cmd[8:].partition("=")  # after "AT+CMQTT"
        if cmd.startswith("ATD"):
            number = cmd[3:-1]
            self.dialled.append(number)
            outcome = self.outcomes.get(number, "")
            self.send(
                "\r\nOK\r\n"
                + {
                    "answer": "\r\nVOICE CALL: BEGIN\r\n",
                    "busy": "\r\nBUSY\r\n",
                    "no_answer": "\r\nNO ANSWER\r\n",
                }.get(outcome, "")
            )
        elif cmd == "AT+CHUP":
            self.send("\r\nVOICE CALL: END: 000003\r\n\r\nOK\r\n")
        elif cmd.startswith("AT+CMGS="):
            self._sms = [cmd[9:-1], b""]
            self.send("\r\n> ")
        elif cmd.split("=")[0] in ("AT+CGDCONT", "AT+CMQTTACCQ", "AT+CSSLCFG", "AT+CMQTTSSLCFG"):
            self.send("\r\nOK\r\n")
        elif cmd == "AT+CCERTLIST":  # the certificates are the .pem entries of data
            names = [n for n in self.data if n.endswith(".pem")]
            self.send("".join('\r\n+CCERTLIST: "%s"' % n for n in names) + "\r\n\r\nOK\r\n")
        elif cmd.startswith("AT+CCERTDOWN="):
            name, size = args.split(",")  # args: what follows the "="
            self._for = name.strip('"')
            self._need = int(size)
            self.data[self._for] = bytearray()  # grown in place, byte by byte
            self.send("\r\n>")
        elif cmd.startswith("AT+CCERTDELE="):
            self.data.pop(args.strip('"'), None)
            self.send("\r\nOK\r\n")
        elif cmd == "AT+CGNSSPWR=1":
            self.send("\r\nOK\r\n\r\n+CGNSSPWR: READY!\r\n")
        elif cmd == "AT+CGNSSINFO":
            self.send("\r\n%s\r\n\r\nOK\r\n" % self.gnss)
        elif name in PROMPTED and cmd.startswith("AT+CMQTT"):
            self._need = int(args.split(",")[1])
            self._for = name
            self.data[name] = b""
            self.send("\r\n>")
        elif cmd == "AT+CMQTTSTART":
            self.send(
                "\r\n+CMQTTSTART: 0\r\n\r\nOK\r\n"
                if self.start_before_ok
                else "\r\nOK\r\n\r\n+CMQTTSTART: 0\r\n"
            )
        elif cmd == "AT+CMQTTSTOP":
            self.send("\r\nOK\r\n\r\n+CMQTTSTOP: 0\r\n")
        elif name == "DISC":
            self.send("\r\n+CMQTTDISC: 0,11\r\n\r\nERROR\r\n")
        elif name == "CONNECT":
            self.connects.append(cmd)
            self.send(
                "\r\nOK\r\n\r\n+CMQTTCONNECT: 0,%d\r\n"
                % (self.connect_results.pop(0) if self.connect_results else 0)
            )
        elif cmd == "AT+CMQTTSUB=0":
            self.subscribed.append(self.data["SUBTOPIC"])
            self.send("\r\nOK\r\n\r\n+CMQTTSUB: 0,0\r\n")
            if self.on_subscribe:
                self.on_subscribe(self.data["SUBTOPIC"])
        elif name == "PUB":
            err = self.pub_results.pop(0) if self.pub_results else 0
            self.send("\r\nOK\r\n\r\n+CMQTTPUB: 0,%d\r\n" % err)
            if not err:
                self.published.append((self.data["TOPIC"], self.data["PAYLOAD"]))
                if self.on_publish:
                    self.on_publish(self.data["TOPIC"], self.data["PAYLOAD"])
        else:  # AT+CMQTTREL when nothing was acquired, and anything unknown
            self.send("\r\nERROR\r\n")


def opener(fake):
    """An opener for ATChannel that hands out the fake."""

    async def open_fake():
        return fake

    return open_fake
