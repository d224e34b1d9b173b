"""The user's own model: any torch.nn.Module, built as Net(input_shape, num_classes), giving [batch, classes] logits.

wemem prunes every Linear and Conv2d weight except those of the modules listed in ``unprunable`` (here the
output layer, as the built-in tabular model does). The model keeps its own initialization.
"""

from torch import nn


class Net(nn.Module):
    unprunable = ("out",)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(input_shape[0], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.out(self.hidden(x))
