// Durable Task Scheduler and its task hub, plus the data-plane role assignments on the task hub.

@description('Location of the scheduler.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Scheduler name (3-64 letters, digits or hyphens).')
param schedulerName string

@description('Task hub name (3-64 letters, digits or hyphens); the worker reads it from TASKHUB_NAME.')
param taskHubName string

@allowed([
  'Consumption'
  'Dedicated'
])
@description('Scheduler SKU.')
param skuName string = 'Consumption'

@minValue(1)
@description('Capacity units; only used by the Dedicated SKU.')
param dedicatedCapacity int = 1

@description('IP addresses or CIDR ranges allowed to reach the scheduler. An empty list denies all traffic.')
param ipAllowlist array

@description('Principal id of the worker identity: gets Durable Task Data Contributor on the task hub.')
param workerPrincipalId string

@description('Principal id of the deploying user: gets Durable Task Data Contributor on the task hub (required by the dashboard). Empty = no assignment.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of userPrincipalId.')
param userPrincipalType string = 'User'

// Built-in role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (Integration).
// The worker both schedules orchestrations / raises events (client) and runs them (worker), so it needs
// Data Contributor; "Durable Task Worker" (80d0d6b0-f522-40a4-8886-a5a11720c375) only covers processing.
var durableTaskDataContributorRoleId = '0ad04412-c4d5-4796-b79c-f76d14c8d402'

var dedicatedSku = {
  name: 'Dedicated'
  capacity: dedicatedCapacity
}
var consumptionSku = {
  name: 'Consumption'
}

resource scheduler 'Microsoft.DurableTask/schedulers@2026-02-01' = {
  name: schedulerName
  location: location
  tags: tags
  properties: {
    ipAllowlist: ipAllowlist
    sku: skuName == 'Dedicated' ? dedicatedSku : consumptionSku
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2026-02-01' = {
  parent: scheduler
  name: taskHubName
  properties: {}
}

resource workerContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(taskHub.id, workerPrincipalId, durableTaskDataContributorRoleId)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(taskHub.id, userPrincipalId, durableTaskDataContributorRoleId)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// The endpoint is documented as a URL; normalise in case it is ever returned without a scheme.
var rawEndpoint = scheduler.properties.endpoint
var endpoint = startsWith(rawEndpoint, 'https://') ? rawEndpoint : 'https://${rawEndpoint}'

output endpoint string = endpoint
output taskHubName string = taskHub.name
output dashboardUrl string = 'https://dashboard.durabletask.io/?endpoint=${uriComponent(endpoint)}&taskhub=${taskHub.name}'
