"""The technique table: the Recipe, the Step type, the steps in order, the fields, the pipeline that walks them, presets."""
