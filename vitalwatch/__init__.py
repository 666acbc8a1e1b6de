"""VitalWatch: bedside vital-signs monitoring for IV ketamine infusion chairs.

Reads SpO2/pulse oximeters and NIBP monitors over serial, tracks the session's phases,
evaluates the clinic's alarm table and sends secondary alert notifications over MQTT.
The bedside monitor remains the primary alarm.
"""

__version__ = "0.1.0"
