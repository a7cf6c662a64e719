// Service Bus namespace (Entra ID only, TLS 1.2) and the queue the worker listens on.
// The queue settings mirror infra/servicebus-emulator/Config.json; tests/deploy checks that they agree.

@description('Location of the namespace.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Namespace name (6-50 characters, globally unique).')
param namespaceName string

@description('Queue name; must equal the queue in infra/servicebus-emulator/Config.json.')
param queueName string

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Namespace tier.')
param skuName string = 'Standard'

@description('Principal id of the worker identity: gets Azure Service Bus Data Receiver on the queue, and Data Sender on it to re-enqueue an approval that arrived before its start as a scheduled copy.')
param workerPrincipalId string

@description('Principal id of the scaler identity: gets Azure Service Bus Data Owner on the queue (KEDA needs the Manage claim to read the message count).')
param scalerPrincipalId string

@description('Principal id of the deploying user: gets Azure Service Bus Data Sender on the queue so they can publish. Empty = no assignment.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of userPrincipalId.')
param userPrincipalType string = 'User'

// Built-in role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (Integration).
var serviceBusDataReceiverRoleId = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var serviceBusDataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataOwnerRoleId = '090c5cfd-751d-490a-894a-3ce6f1109419'

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    defaultMessageTimeToLive: 'PT1H'
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: false
    requiresSession: false
  }
}

resource workerReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, workerPrincipalId, serviceBusDataReceiverRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The listener re-schedules an approval whose instance does not exist yet (a scheduled copy, then it completes
// the original) instead of holding a lock or hot-looping redeliveries: that send needs Data Sender on the queue.
resource workerSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, workerPrincipalId, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource scalerOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, scalerPrincipalId, serviceBusDataOwnerRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwnerRoleId)
    principalId: scalerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(queue.id, userPrincipalId, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output namespaceName string = namespace.name
output namespaceFqdn string = '${namespace.name}.servicebus.windows.net'
output queueName string = queue.name
