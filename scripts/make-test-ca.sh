#!/usr/bin/env bash
# A private test CA for a clinic, and certificates for its broker, bed gateways and nurse stations.
#
#   scripts/make-test-ca.sh [-d DAYS] OUTDIR BROKER_HOST [CLIENT_CN ...]
#
#   scripts/make-test-ca.sh /etc/mosquitto/vitalwatch/certs broker.clinic-a.local \
#       gw-clinic-a-1 station-clinic-a
#
# writes into OUTDIR:
#   ca.crt ca.key              the CA (keep ca.key offline once the clinic is set up)
#   broker.crt broker.key      serverAuth; SAN = BROKER_HOST, localhost, 127.0.0.1, ::1
#   CLIENT_CN.crt .key         clientAuth; CN = CLIENT_CN = the MQTT user name in the ACL
#                              (mosquitto: use_identity_as_username true)
#
# Why a private CA: with require_certificate, Mosquitto accepts ANY certificate signed by a CA in
# its cafile, so that CA must mint certificates for this clinic only (operations note §2.2, §12).
# Keys are EC P-256 (fast to make, supported by Mosquitto 2.0 / OpenSSL 3); private keys are 0600.
# An existing CA in OUTDIR is reused, so clients can be added later with the same command.
# Needs only openssl.
set -euo pipefail

days=825  # the longest validity Apple/Chrome accept for a server certificate; renew before then
while getopts "d:" opt; do
    case $opt in
        d) days=$OPTARG ;;
        *) echo "usage: $0 [-d DAYS] OUTDIR BROKER_HOST [CLIENT_CN ...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -lt 2 ]; then
    echo "usage: $0 [-d DAYS] OUTDIR BROKER_HOST [CLIENT_CN ...]" >&2
    exit 2
fi
out=$1
broker_host=$2
shift 2

# Names become file names and MQTT user names: the same rule as a topic level.
valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]; }
for cn in "$@"; do
    if ! valid_name "$cn" || [ "$cn" = ca ] || [ "$cn" = broker ]; then
        echo "$0: bad client name '$cn' (1-64 letters, digits, '_', '.', '-'; not 'ca' or 'broker')" >&2
        exit 2
    fi
done

umask 077
mkdir -p "$out"
cd "$out"

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.crt -days "$days" -sha256 \
        -subj "/O=VitalWatch test CA/CN=VitalWatch clinic CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# issue NAME CN EXTENSIONS: a key and a CA-signed certificate.
issue() {
    local name=$1 cn=$2 ext=$3
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "/O=VitalWatch/CN=$cn" 2>/dev/null
    printf '%b' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$name.crt" -days "$days" -sha256 -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

common="basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
if printf '%s' "$broker_host" | grep -qE '^[0-9.]+$|:'; then
    san="IP:$broker_host"
else
    san="DNS:$broker_host"
fi
issue broker "$broker_host" "${common}extendedKeyUsage=serverAuth\nsubjectAltName=$san,DNS:localhost,IP:127.0.0.1,IP:::1\n"
for cn in "$@"; do
    issue "$cn" "$cn" "${common}extendedKeyUsage=clientAuth\n"
done

# Certificates are public; the broker (user mosquitto) must read its own key: the installer
# chowns broker.key to mosquitto, the tests run the broker as the same user.
chmod 0644 ca.crt broker.crt
for cn in "$@"; do chmod 0644 "$cn.crt"; done
echo "certificates in $(pwd): ca.crt broker.crt $(printf '%s.crt ' "$@")"
