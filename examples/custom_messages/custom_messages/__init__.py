"""custom_messages: arbitrary objects in Messages, and a custom message type."""
