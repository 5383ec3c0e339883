"""MQTT: events out through a bounded queue, a retained status with a last will, commands in.

Import the pieces from their modules: daemon.bus.publisher (MqttBus), daemon.bus.commands,
daemon.bus.bars (MqttBarFeed), daemon.bus.config.
"""
